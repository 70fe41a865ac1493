/* A deliberately bad file: the banned-function check must refuse it
 * (tests/style/meson.build).  strcpy(in a comment) is not a call. */
#include <stdio.h>
#include <string.h>

int bad_banned(char *out, const char *in);

int bad_banned(char *out, const char *in)
{
	const char *s = "sprintf(in a string) is not a call either";

	(void)s;
	strcpy(out, in);
	return sprintf(out, "%s", in);
}
