-- wrk script, binding validate: POST /validate, pods/binding CREATE reviews for the snapshot's pending pods (some denied).
-- The request bodies come from the file named after `--` (see replay.lua).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "replay.lua")
