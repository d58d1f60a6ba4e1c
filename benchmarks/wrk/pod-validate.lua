-- wrk script, pod validate: POST /validate, the mutated pod CREATE reviews kube-apiserver sends after /mutate.
-- The request bodies come from the file named after `--` (see replay.lua).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "replay.lua")
