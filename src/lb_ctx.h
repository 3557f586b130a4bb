/*
 * lb_ctx.h - the handler call in progress, as the Lua bindings see it.
 *
 * Some bindings need to know about the call that is running: walua.log
 * tags each line with the event, walua.httpc keeps its timeouts within
 * the handler's budget.  They need not know who runs it.  So the context
 * is defined here, on the bindings' side, and the host fills it in:
 * lhost.c keeps one in each struct lhost, points its state at it with
 * lb_ctx_set and sets the fields around each call; a state that runs no
 * handler (an admin script's) points at none.  The includes then go one
 * way only: lhost.c includes lb.h and lb_ctx.h to open and feed the
 * bindings, and no binding includes lhost.h.
 */
#ifndef LB_CTX_H
#define LB_CTX_H

#include <stddef.h>
#include <stdint.h>

struct lua_State;

struct buf;
struct client_req;
struct lb_ctx;

/*
 * What a host that runs handlers as coroutines offers the bindings: a
 * transfer or a pause that yields the event's coroutine instead of
 * blocking the process.  The host resumes the coroutine when it is over;
 * the binding's continuation then collects the outcome.
 */
struct lb_async {
	/* start req (answer into body, headers); a handle or NULL + err */
	void	*(*fetch)(struct lb_ctx *, const struct client_req *,
		    struct buf *body, struct buf *headers, char *err,
		    size_t errlen);
	/* a finished transfer's outcome (0 + status | -1 + err); frees it */
	int	 (*fetch_end)(struct lb_ctx *, void *f, int *status,
		    double *seconds, char *err, size_t errlen);
	/* resume the coroutine after ms */
	int	 (*sleep)(struct lb_ctx *, int64_t ms);
};

struct lb_ctx {
	int64_t		 deadline_ns;	/* on lb_ctx_now_ns(); 0: none armed */
	const char	*ev_id;		/* the event being handled (borrowed) */
	const char	*ev_conv;	/* its conversation, or NULL */
	const char	*ev_msgid;	/* the provider's message id, or NULL */
	int		 tripped;	/* the deadline fired (the count hook) */
	int64_t		 slice_end_ns;	/* yield to other events after this */
	int		 preempted;	/* it yielded for them (the hook) */
	int		 sends;		/* walua.whatsapp sends in this run */
	struct lua_State *co;		/* the event's coroutine, or NULL */
	const struct lb_async *async;	/* NULL: every call blocks */
};

struct lb_ctx	*lb_ctx_of(struct lua_State *);	/* NULL: no handler host */
void		 lb_ctx_set(struct lua_State *, struct lb_ctx *);
int64_t		 lb_ctx_now_ns(void);
struct lb_ctx	*lb_ctx_async(struct lua_State *);

#endif
