/* lb.h - the C side of the Lua API handlers see (one file per module). */
#ifndef LB_H
#define LB_H

#include <lua.h>
#include <lauxlib.h>

/* lb_log.c: C.log(level, msg [, fields]) -> one JSON log line carrying the
 * current event's id and conversation.  [-0, +0, m] */
int	lb_log_write(lua_State *L);
int	luaopen_walua_log(lua_State *L);	/* writer at the top */

/* lb_json.c */
int	lb_json_open_cjson(lua_State *L);	/* the handlers' `cjson` */
int	lb_json_decode_raise(lua_State *L);	/* cjson.decode; raises */
int	lb_json_decode_event(lua_State *L);	/* a stored event; raises */
void	lb_json_event_text(lua_State *L);	/* stored event -> JSON text */
void	lb_json_integerize(lua_State *L, int idx, int depth);

/* lb_util.c */
struct buf;
int	lb_push_error(lua_State *L, int status, const char *code,
	    const char *msg);
struct buf *lb_newbuf(lua_State *L);	/* freed by Lua's collector */

/* lb_http.c, lb_crypto.c */
int	luaopen_walua_httpc(lua_State *L);
void	lb_http_set_metric_hook(void (*)(const char *family,
	    const char *labels, double value));
int	luaopen_walua_crypto(lua_State *L);
void	lb_http_metric(const char *family, const char *labels, double value);

/* lb_outbound.c: walua.whatsapp's journal and pace (walua's modules) */
int	luaopen_walua_outbound(lua_State *L);

/* lb_inbox.c, lb_passwd.c: admin scripts only */
int	luaopen_walua_inbox(lua_State *L);
int	luaopen_walua_passwd(lua_State *L);

/* lb_store.c */
int	luaopen_walua_store(lua_State *L);
void	lb_store_setup(const char *path, int durability);
void	lb_store_close(void);
struct db *lb_store_conn(void);

#endif
