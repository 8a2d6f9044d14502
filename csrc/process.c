/* process.c -- placeholder until the submodule lands; provides nothing. */
#include "dt.h"

void dt_open_process (lua_State *L) { (void)L; }
void dt_process_shutdown (dt_loop *loop) { (void)loop; }
