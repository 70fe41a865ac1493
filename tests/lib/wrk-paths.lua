-- wrk -s wrk-paths.lua: GET each path of the file WRK_PATHS names (one a
-- line), in turn, over and over: many resources rather than one.
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
	i = i % #paths + 1
	return wrk.format("GET", paths[i])
end
