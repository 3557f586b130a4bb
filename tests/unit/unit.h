/*
 * unit.h - the assertions of walua's C unit tests: no framework, one
 * binary per module (lighttpd's src/t/).  Each CHECK counts; a failing
 * one prints where and goes on.  UNIT_DONE() prints "N passed, N failed"
 * and gives the exit status.
 */
#ifndef UNIT_H
#define UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed;

#define CHECK(cond) do {						\
	if (cond)							\
		unit_passed++;						\
	else {								\
		unit_failed++;						\
		printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);	\
	}								\
} while (0)

#define CHECK_STR(a, b) do {						\
	const char *a_ = (a), *b_ = (b);				\
	if (a_ != NULL && b_ != NULL && strcmp(a_, b_) == 0)		\
		unit_passed++;						\
	else {								\
		unit_failed++;						\
		printf("FAIL %s:%d: %s == %s (got \"%s\", want \"%s\")\n", \
		    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)",	\
		    b_ ? b_ : "(null)");				\
	}								\
} while (0)

#define UNIT_DONE() (printf("%d passed, %d failed\n", unit_passed,	\
	unit_failed), unit_failed ? 1 : 0)

#endif
