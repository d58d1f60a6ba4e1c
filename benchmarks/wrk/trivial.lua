-- wrk script, the generator's ceiling: POST a trivial review ({"request":{"uid":…}}) to the floor.
-- The request bodies come from the file named after `--` (see replay.lua).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "replay.lua")
