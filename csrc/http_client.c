/* http_client.c -- placeholder until the submodule lands; provides nothing. */
#include "dt.h"

void dt_open_http (lua_State *L) { (void)L; }
void dt_http_shutdown (dt_loop *loop) { (void)loop; }
