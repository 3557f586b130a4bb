/* test_hex.c - the lower-case hex encoder every module uses. */
#include "hex.h"

#include "unit.h"

int
main(void)
{
	char	out[9];

	memset(out, 'x', sizeof(out));
	hex_encode("\x00\x1f\xab\xff", 4, out);
	CHECK_STR(out, "001fabff");
	hex_encode("", 0, out);
	CHECK(out[0] == '\0');
	return UNIT_DONE();
}
