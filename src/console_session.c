/*
 * console_session.c - the console's sessions and its login lockout.
 *
 * Sessions live in memory only (a restart logs everyone out): a random
 * 32-byte id (the cookie), the user, a per-session CSRF token, and the
 * user's password hash when it logged in, so a reload that removes the
 * user or changes its password ends its sessions.  A session ends after
 * SESSION_IDLE_MS unused or SESSION_MAX_MS in all.  Ids are compared in
 * constant time.  At most MAX_SESSIONS: a new one replaces the least
 * recently used.
 *
 * Lockout, like the token endpoint's (oauth.c): FAIL_LIMIT wrong
 * passwords within FAIL_WINDOW_MS for one user name, or from one client
 * address, and every login of that name or from that address gets 429
 * until the window is over, even with the right password (an operator
 * waits a minute; a guesser gets five tries a minute).  The table is
 * bounded (MAX_FAILS); when full, the oldest count makes room.
 */
#include "console_session.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "hex.h"

#define MAX_SESSIONS	256
#define FAIL_LIMIT	5		/* wrong passwords ... */
#define FAIL_WINDOW_MS	60000		/* ... in this window, then 429 */
#define MAX_FAILS	1024

struct session {
	int	 used;
	char	 id[SESSION_ID_HEX + 1];
	char	 csrf[SESSION_ID_HEX + 1];
	char	 user[65];
	char	*password_hash;		/* the user's when it logged in */
	int64_t	 created_ms, last_ms;
};

struct failures {
	char	 key[200];		/* "u:NAME" or "a:ADDRESS"; "": free */
	int	 count;
	int64_t	 since_ms;
};

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static struct session	 sessions[MAX_SESSIONS];
static struct failures	 fails[MAX_FAILS];

static int64_t
now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
random_hex(char out[SESSION_ID_HEX + 1])
{
	unsigned char	raw[SESSION_ID_HEX / 2];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	hex_encode(raw, sizeof(raw), out);
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

static void
session_clear(struct session *s)
{
	free(s->password_hash);
	OPENSSL_cleanse(s, sizeof(*s));
}

/*
 * A new session for user; its id in id.  Returns 0, or -1 (no
 * randomness, out of memory).
 */
int
session_create(const char *user, const char *password_hash,
    char id[SESSION_ID_HEX + 1])
{
	struct session	*s, *victim = NULL;
	int64_t		 now = now_ms();
	char		*h;
	int		 i;

	if ((h = strdup(password_hash)) == NULL)
		return -1;
	pthread_mutex_lock(&mu);
	for (i = 0; i < MAX_SESSIONS; i++) {
		s = &sessions[i];
		if (!s->used) {
			victim = s;
			break;
		}
		if (victim == NULL || s->last_ms < victim->last_ms)
			victim = s;
	}
	session_clear(victim);
	if (random_hex(victim->id) == -1 || random_hex(victim->csrf) == -1) {
		session_clear(victim);
		pthread_mutex_unlock(&mu);
		free(h);
		return -1;
	}
	snprintf(victim->user, sizeof(victim->user), "%s", user);
	victim->password_hash = h;
	victim->created_ms = victim->last_ms = now;
	victim->used = 1;
	memcpy(id, victim->id, SESSION_ID_HEX + 1);
	pthread_mutex_unlock(&mu);
	return 0;
}

/*
 * The live session with this id: 1 with its user and CSRF token in out,
 * else 0.  hash_of(arg, user) gives the user's password hash in the
 * running configuration (NULL: no such user): a session whose user is
 * gone, or whose password changed, ends.
 */
int
session_find(const char *id, const char *(*hash_of)(const void *,
    const char *), const void *arg, struct session_view *out)
{
	struct session	*s;
	const char	*h;
	int64_t		 now = now_ms();
	int		 i, found = 0;

	if (id == NULL || strlen(id) != SESSION_ID_HEX)
		return 0;
	pthread_mutex_lock(&mu);
	for (i = 0; i < MAX_SESSIONS; i++) {
		s = &sessions[i];
		if (!s->used || CRYPTO_memcmp(s->id, id, SESSION_ID_HEX) != 0)
			continue;
		if (now - s->last_ms > SESSION_IDLE_MS ||
		    now - s->created_ms > SESSION_MAX_MS ||
		    (h = hash_of(arg, s->user)) == NULL ||
		    strcmp(h, s->password_hash) != 0) {
			session_clear(s);
			break;
		}
		s->last_ms = now;
		memcpy(out->user, s->user, sizeof(out->user));
		memcpy(out->csrf, s->csrf, sizeof(out->csrf));
		found = 1;
		break;
	}
	pthread_mutex_unlock(&mu);
	return found;
}

void
session_drop(const char *id)
{
	int	i;

	if (id == NULL || strlen(id) != SESSION_ID_HEX)
		return;
	pthread_mutex_lock(&mu);
	for (i = 0; i < MAX_SESSIONS; i++)
		if (sessions[i].used && CRYPTO_memcmp(sessions[i].id, id,
		    SESSION_ID_HEX) == 0)
			session_clear(&sessions[i]);
	pthread_mutex_unlock(&mu);
}

void
session_free_all(void)
{
	int	i;

	pthread_mutex_lock(&mu);
	for (i = 0; i < MAX_SESSIONS; i++)
		session_clear(&sessions[i]);
	pthread_mutex_unlock(&mu);
}

/* The count of key (mu held), or NULL; with create, one made room for. */
static struct failures *
failures_of(const char *prefix, const char *name, int create, int64_t now)
{
	struct failures	*f, *spare = NULL, *oldest = NULL, *victim;
	char		 key[sizeof(f->key)];
	int		 i;

	snprintf(key, sizeof(key), "%s%s", prefix, name);
	for (i = 0; i < MAX_FAILS; i++) {
		f = &fails[i];
		if (f->key[0] != '\0' && strcmp(f->key, key) == 0)
			return f;
		if (f->key[0] == '\0' || now - f->since_ms >= FAIL_WINDOW_MS) {
			if (spare == NULL)
				spare = f;
		} else if (oldest == NULL || f->since_ms < oldest->since_ms)
			oldest = f;
	}
	if (!create)
		return NULL;
	victim = spare != NULL ? spare : oldest;
	memset(victim, 0, sizeof(*victim));
	memcpy(victim->key, key, sizeof(victim->key));
	victim->since_ms = now;
	return victim;
}

static int
wait_s(const struct failures *f, int64_t now)
{
	if (f == NULL || f->count < FAIL_LIMIT ||
	    now - f->since_ms >= FAIL_WINDOW_MS)
		return 0;
	return (int)((f->since_ms + FAIL_WINDOW_MS - now + 999) / 1000);
}

/* Seconds a login of user from addr must wait (0: it may try now). */
int
lockout_wait(const char *user, const char *addr)
{
	int64_t	now = now_ms();
	int	a, b;

	pthread_mutex_lock(&mu);
	a = wait_s(failures_of("u:", user, 0, now), now);
	b = wait_s(failures_of("a:", addr, 0, now), now);
	pthread_mutex_unlock(&mu);
	return a > b ? a : b;
}

/* A wrong password for user from addr. */
void
lockout_fail(const char *user, const char *addr)
{
	const char	*prefix[2] = { "u:", "a:" }, *name[2] = { user, addr };
	struct failures	*f;
	int64_t		 now = now_ms();
	int		 i;

	pthread_mutex_lock(&mu);
	for (i = 0; i < 2; i++) {
		f = failures_of(prefix[i], name[i], 1, now);
		if (now - f->since_ms >= FAIL_WINDOW_MS) {
			f->count = 0;
			f->since_ms = now;
		}
		f->count++;
	}
	pthread_mutex_unlock(&mu);
}

/* A successful login: forget the counts of user and addr. */
void
lockout_clear(const char *user, const char *addr)
{
	struct failures	*f;
	int64_t		 now = now_ms();

	pthread_mutex_lock(&mu);
	if ((f = failures_of("u:", user, 0, now)) != NULL)
		memset(f, 0, sizeof(*f));
	if ((f = failures_of("a:", addr, 0, now)) != NULL)
		memset(f, 0, sizeof(*f));
	pthread_mutex_unlock(&mu);
}
