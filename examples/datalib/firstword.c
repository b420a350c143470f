#include <stdio.h>
#include "datalib.h"

int main(void) {
  const char *w = datalib_first_word();
  if (!w) {
    fprintf(stderr, "cannot read %s/words.txt\n", datalib_data_dir());
    return 1;
  }
  printf("first word: %s\n", w);
  return 0;
}
