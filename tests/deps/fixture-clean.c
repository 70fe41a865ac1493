/* A "module" with no forbidden dependency: the self-test's control. */
__attribute__((visibility("default"))) int depcheck_fixture_clean(int x);

int depcheck_fixture_clean(int x)
{
	return x + 1;
}
