/* A file both style checks accept: the control for the bad fixtures. */
#include <stdio.h>

int good_style(char *out, size_t len, const char *in);

int good_style(char *out, size_t len, const char *in)
{
	const char *s = "strcpy(x, y) in a string";

	if (out == NULL || len == 0)
		return -1;
	(void)s;
	/* sprintf(out, in) in a comment */
	return snprintf(out, len, "%s", in);
}
