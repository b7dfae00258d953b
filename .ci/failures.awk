# Prints what `go test` said of each failure in its output: the --- FAIL lines with the indented lines under them
# (the test's messages), a panic or a timeout with its next 60 lines, and the FAIL line of each package; at most 400
# lines in all.
function emit(line) { if (printed++ < 400) print line }
/^[ \t]*--- FAIL/ { keep = 1; emit($0); next }
/^(panic: |fatal error: |WARNING: DATA RACE|test timed out)/ { rest = 60 }
rest > 0 { rest--; emit($0); next }
keep && /^[ \t]/ { emit($0); next }
{ keep = 0 }
/^FAIL\t/ { emit($0) }
