/*
 * seqset.h - a set of event seqs that mostly arrive in increasing order
 * and mostly leave from the front: the inbox writer's events stored and
 * not yet handled, whose smallest is where the pending events start.
 */
#ifndef SEQSET_H
#define SEQSET_H

struct seqset {
	long long	*v;		/* ascending; gone ones kept in place */
	unsigned char	*gone;
	size_t		 head, len, cap, ngone;
};

int	seqset_add(struct seqset *, long long seq);	/* 0, -1 no memory */
void	seqset_del(struct seqset *, long long seq);
int	seqset_min(const struct seqset *, long long *min); /* 0 if empty */
size_t	seqset_count(const struct seqset *);
void	seqset_free(struct seqset *);

#endif
