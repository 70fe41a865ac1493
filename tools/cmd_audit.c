/* smartcert audit: not built yet. */
#include <stdio.h>
#include "sc_cli.h"

int sc_cmd_audit(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "smartcert %s: not available in this build yet\n", argv[0]);
	return SC_EXIT_FAIL;
}
