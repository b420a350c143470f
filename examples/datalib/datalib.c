#include <stdio.h>
#include <string.h>
#include "datalib.h"

/* DATALIB_DATA_DIR is the install prefix's share/datalib, compiled in: a
   conda installer replaces the prefix in this C string. */
const char *datalib_data_dir(void) { return DATALIB_DATA_DIR; }

const char *datalib_first_word(void) {
  static char word[128];
  char path[4096];
  snprintf(path, sizeof path, "%s/words.txt", DATALIB_DATA_DIR);
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  if (!fgets(word, sizeof word, f)) { fclose(f); return NULL; }
  fclose(f);
  word[strcspn(word, "\n")] = 0;
  return word;
}
