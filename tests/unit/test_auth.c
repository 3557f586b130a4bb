/* test_auth.c - bearer checks and the constant-time compare. */
#include "auth.h"

#include "unit.h"

int
main(void)
{
	const char	*reason;

	CHECK(auth_equal("abc", 3, "abc", 3));
	CHECK(!auth_equal("abc", 3, "abd", 3));
	CHECK(!auth_equal("abc", 3, "abcd", 4));
	CHECK(!auth_equal("", 0, "a", 1));

	CHECK(auth_bearer("Bearer s3cret", "s3cret", &reason));
	CHECK(auth_bearer("bearer s3cret", "s3cret", &reason));
	CHECK(auth_bearer("BEARER   s3cret", "s3cret", &reason));
	reason = NULL;
	CHECK(!auth_bearer(NULL, "s3cret", &reason));
	CHECK_STR(reason, "missing");
	CHECK(!auth_bearer("", "s3cret", &reason));
	CHECK_STR(reason, "missing");
	CHECK(!auth_bearer("Basic czNjcmV0", "s3cret", &reason));
	CHECK_STR(reason, "scheme");
	CHECK(!auth_bearer("Bearers3cret", "s3cret", &reason));
	CHECK_STR(reason, "scheme");
	CHECK(!auth_bearer("s3cret", "s3cret", &reason));
	CHECK_STR(reason, "scheme");
	CHECK(!auth_bearer("Bearer s3cre", "s3cret", &reason));
	CHECK_STR(reason, "token");
	CHECK(!auth_bearer("Bearer s3cret2", "s3cret", &reason));
	CHECK_STR(reason, "token");
	CHECK(!auth_bearer("Bearer s3cret extra", "s3cret", &reason));
	CHECK_STR(reason, "token");
	CHECK(!auth_bearer("Bearer ", "s3cret", &reason));
	return UNIT_DONE();
}
