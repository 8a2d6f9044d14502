/* http_server.c -- placeholder until the submodule lands; provides nothing. */
#include "dt.h"

void dt_open_server (lua_State *L) { (void)L; }
