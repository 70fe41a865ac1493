#!/usr/bin/env python3
"""Print the case names of a C test file, one a line: the names in its
TCASE(name) and TCASE_NAMED("name", fn) table lines (tests/lib/tcheck.h).
meson.build registers one test a case from this list, so a case is listed
once, in its C file."""
import re
import sys

names = []
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r'\s*TCASE\((\w+)\)', line) or \
                re.match(r'\s*TCASE_NAMED\("([\w-]+)",\s*\w+\)', line)
            if m:
                names.append(m.group(1))
if not names:
    sys.exit("no TCASE lines in " + " ".join(sys.argv[1:]))
print("\n".join(names))
