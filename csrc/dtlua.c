/* dtlua.c -- placeholder main until the interpreter lands. */
#include "dt.h"
int main (void) { return 0; }
