/* ws_client.c -- placeholder until the submodule lands; provides nothing. */
#include "dt.h"

void dt_open_ws (lua_State *L) { (void)L; }
void dt_ws_shutdown (dt_loop *loop) { (void)loop; }
