/* sandbox_launcher.c -- placeholder until the launcher lands. */
#include <stdio.h>
int main (void) { fputs("dtlua-sandbox: not built yet\n", stderr); return 1; }
