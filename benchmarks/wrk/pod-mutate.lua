-- wrk script, pod mutate: POST /mutate, the pod CREATE reviews kube-apiserver sends before the pod exists.
-- The request bodies come from the file named after `--` (see replay.lua).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "replay.lua")
