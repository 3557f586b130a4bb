/*
 * strhash.h - the hash of a C string for walua's hash tables, whose sizes
 * are powers of two (a bucket is the hash's low bits).  djb2, then
 * MurmurHash3's 64-bit finalizer: djb2 alone leaves its low bits to the
 * low bits of the bytes, so keys that differ in their last digits only
 * (message ids, phone numbers) filled a third of the buckets.
 */
#ifndef STRHASH_H
#define STRHASH_H

#include <stdint.h>

static inline uint64_t
strhash(const char *s)
{
	uint64_t	h = 5381;

	while (*s)
		h = h * 33 ^ (unsigned char)*s++;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

#endif
