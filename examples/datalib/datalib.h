/* datalib: a library that reads its data files from where it is installed. */
#ifndef DATALIB_H
#define DATALIB_H
/* The first word of the word list, or NULL when it cannot be read. */
const char *datalib_first_word(void);
/* Where the data files are. */
const char *datalib_data_dir(void);
#endif
