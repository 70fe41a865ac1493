/* A deliberately bad file: the format check must refuse it
 * (tests/style/meson.build). */
int bad_format(int x);

int bad_format(int x) {
    if (x) return 1;
  return 0; }
