/* test_buf.c - buffers and JSON string escaping. */
#include "buf.h"

#include "unit.h"

int
main(void)
{
	struct buf	b = { 0 };
	int		i;

	CHECK(buf_puts(&b, "ab") == 0);
	CHECK(buf_printf(&b, "%d-%s", 12, "x") == 0);
	CHECK_STR(b.data, "ab12-x");
	for (i = 0; i < 1000; i++)
		buf_puts(&b, "0123456789");
	CHECK(b.len == 6 + 10000);
	buf_reset(&b);
	CHECK(b.len == 0 && b.data[0] == '\0');
	CHECK(buf_json_string(&b, "a\"b\\c\n\t\x01\xc3\xa7", 10) == 0);
	CHECK_STR(b.data, "\"a\\\"b\\\\c\\n\\t\\u0001\xc3\xa7\"");
	buf_reset(&b);
	CHECK(buf_json_string(&b, "\x1f\x7f", 2) == 0);
	CHECK_STR(b.data, "\"\\u001f\\u007f\"");
	buf_free(&b);
	CHECK(b.data == NULL && b.len == 0);

	/* an empty append still gives a string; the room ends with the NUL */
	CHECK(buf_append(&b, "", 0) == 0 && b.data != NULL && b.data[0] == '\0');
	while (b.len + 1 < b.cap && buf_append(&b, "x", 1) == 0)
		;
	CHECK(b.len == b.cap - 1 && b.data[b.len] == '\0');
	CHECK(buf_append(&b, "yz", 2) == 0);	/* no room: grows */
	CHECK(b.cap > b.len && b.data[b.len] == '\0');
	CHECK(b.len >= 3 && memcmp(b.data + b.len - 3, "xyz", 3) == 0);
	buf_free(&b);
	return UNIT_DONE();
}
