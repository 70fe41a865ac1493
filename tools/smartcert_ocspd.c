/* smartcert-ocspd: not built yet. */
#include <stdio.h>

int main(void)
{
	fprintf(stderr, "smartcert-ocspd: not available in this build yet\n");
	return 1;
}
