/*
 * test_console_passwd.c - the console's password hashes: a hash made
 * elsewhere (Python's hashlib.pbkdf2_hmac) verifies, a wrong password and
 * malformed hashes do not, and a new hash round-trips.
 */
#include "passwd.h"

#include "unit.h"

/* hashlib.pbkdf2_hmac("sha256", b"correct horse", b"walua-unit-salt!", 10000) */
static const char KNOWN[] = "pbkdf2-sha256$10000$d2FsdWEtdW5pdC1zYWx0IQ==$"
    "ryW6W4eXD9S33hg2Xiilp8gTX+hdVJu7SzS9rIP0fpw=";

int
main(void)
{
	char	h[PASSWD_HASH_MAX], h2[PASSWD_HASH_MAX];

	CHECK(passwd_valid(KNOWN));
	CHECK(passwd_verify(KNOWN, "correct horse", 13) == 1);
	CHECK(passwd_verify(KNOWN, "correct horsf", 13) == 0);
	CHECK(passwd_verify(KNOWN, "correct hors", 12) == 0);
	CHECK(passwd_verify(KNOWN, "", 0) == 0);

	/* not the format: refused, never "verified" */
	CHECK(!passwd_valid("correct horse"));
	CHECK(!passwd_valid(""));
	CHECK(!passwd_valid(NULL));
	CHECK(!passwd_valid("pbkdf2-sha1$10000$d2FsdWEtdW5pdC1zYWx0IQ==$"
	    "ryW6W4eXD9S33hg2Xiilp8gTX+hdVJu7SzS9rIP0fpw="));
	CHECK(!passwd_valid("pbkdf2-sha256$100$d2FsdWEtdW5pdC1zYWx0IQ==$"
	    "ryW6W4eXD9S33hg2Xiilp8gTX+hdVJu7SzS9rIP0fpw="));	/* too few */
	CHECK(!passwd_valid("pbkdf2-sha256$10000$d2FsdWEtdW5pdC1zYWx0IQ==$"
	    "ryW6W4eXD9S33hg2Xiilp8gTX+hdVJu7SzS9rIP0fp"));	/* truncated */
	CHECK(!passwd_valid("pbkdf2-sha256$10000$$"
	    "ryW6W4eXD9S33hg2Xiilp8gTX+hdVJu7SzS9rIP0fpw="));
	CHECK(!passwd_valid("pbkdf2-sha256$10000$d2FsdWEtdW5pdC1zYWx0IQ==$"
	    "ryW6W4eXD9S33hg2Xiilp8gTX+hdVJu7SzS9rIP0fpw=$x"));
	CHECK(!passwd_valid("pbkdf2-sha256$010000$d2FsdWEtdW5pdC1zYWx0IQ==$"
	    "ryW6W4eXD9S33hg2Xiilp8gTX+hdVJu7SzS9rIP0fpw="));
	CHECK(passwd_verify("correct horse", "correct horse", 13) == -1);

	/* a new hash: the format, verifies, a new salt each time */
	CHECK(passwd_hash("s3cret pass", 11, 10000, h, sizeof(h)) == 0);
	CHECK(passwd_valid(h));
	CHECK(strncmp(h, "pbkdf2-sha256$10000$", 20) == 0);
	CHECK(passwd_verify(h, "s3cret pass", 11) == 1);
	CHECK(passwd_verify(h, "s3cret pasS", 11) == 0);
	CHECK(passwd_hash("s3cret pass", 11, 10000, h2, sizeof(h2)) == 0);
	CHECK(strcmp(h, h2) != 0);
	CHECK(passwd_hash("x", 1, 5, h, sizeof(h)) == -1);
	CHECK(passwd_hash("x", 1, 10000, h, 20) == -1);
	return UNIT_DONE();
}
