/*
 * ckpt.c - staging buffers for one checkpoint.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ckpt.h"

/* Page buffers are mmap()ed so large ones do not fragment the heap. */
static void *map_pages(uint64_t n)
{
	void *p = mmap(NULL, n * CKPT_PAGE_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

struct ckpt *ckpt_new(uint64_t pages)
{
	struct ckpt *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	if (pages && ckpt_reserve_pages(c, pages)) {
		free(c);
		return NULL;
	}
	return c;
}

void ckpt_free(struct ckpt *c)
{
	if (!c)
		return;
	if (c->pages)
		munmap(c->pages, c->cap_pages * CKPT_PAGE_SIZE);
	free(c->pfns);
	free(c->state);
	free(c->blob);
	verify_set_free(&c->verify);
	free(c);
}

void ckpt_reset(struct ckpt *c, uint64_t epoch)
{
	c->epoch = epoch;
	c->flags = 0;
	c->npages = 0;
	c->state_kind = 0;
	c->state_len = 0;
	c->blob_len = 0;
	c->t_suspend_us = c->t_capture_us = c->t_resume_us = 0;
	c->captured_at_ns = 0;
	c->has_digest = false;
	c->has_verify = false;
	c->ndev = 0;
	c->verify.n = 0;
	c->verify.has_vcpu = false;
}

void ckpt_swap(struct ckpt *a, struct ckpt *b)
{
	struct ckpt t = *a;

	*a = *b;
	*b = t;
}

int ckpt_reserve_pages(struct ckpt *c, uint64_t n)
{
	uint64_t want = c->npages + n, cap;
	uint64_t *pfns;
	uint8_t *pages;

	if (want <= c->cap_pages)
		return 0;
	cap = c->cap_pages ? c->cap_pages : 256;
	while (cap < want)
		cap *= 2;
	pfns = realloc(c->pfns, cap * sizeof(*pfns));
	if (!pfns)
		return -ENOMEM;
	c->pfns = pfns;
	if (c->pages) {
		pages = mremap(c->pages, c->cap_pages * CKPT_PAGE_SIZE, cap * CKPT_PAGE_SIZE,
			       MREMAP_MAYMOVE);
		if (pages == MAP_FAILED)
			return -ENOMEM;
	} else {
		pages = map_pages(cap);
		if (!pages)
			return -ENOMEM;
	}
	c->pages = pages;
	c->cap_pages = cap;
	return 0;
}

int ckpt_add_page(struct ckpt *c, uint64_t pfn, const void *src)
{
	if (c->npages == c->cap_pages && ckpt_reserve_pages(c, 1))
		return -ENOMEM;
	c->pfns[c->npages] = pfn;
	memcpy(c->pages + c->npages * CKPT_PAGE_SIZE, src, CKPT_PAGE_SIZE);
	c->npages++;
	return 0;
}

int ckpt_set_state(struct ckpt *c, uint32_t kind, const void *data, uint32_t len)
{
	if (len > c->state_cap) {
		uint8_t *p = realloc(c->state, len);
		if (!p)
			return -ENOMEM;
		c->state = p;
		c->state_cap = len;
	}
	memcpy(c->state, data, len);
	c->state_kind = kind;
	c->state_len = len;
	return 0;
}

int ckpt_append_blob(struct ckpt *c, const void *data, size_t len)
{
	if (c->blob_len + len > c->blob_cap) {
		size_t cap = c->blob_cap ? c->blob_cap : 65536;
		uint8_t *p;
		while (cap < c->blob_len + len)
			cap *= 2;
		p = realloc(c->blob, cap);
		if (!p)
			return -ENOMEM;
		c->blob = p;
		c->blob_cap = cap;
	}
	memcpy(c->blob + c->blob_len, data, len);
	c->blob_len += len;
	return 0;
}

size_t ckpt_bytes(const struct ckpt *c)
{
	return c->cap_pages * (CKPT_PAGE_SIZE + 8) + c->state_cap + c->blob_cap +
	       (size_t)c->verify.cap * 16;
}
