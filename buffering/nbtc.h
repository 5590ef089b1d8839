/*
 * nbtc.h - private to buffering/: the rtnetlink (libnl-route-3) helpers the
 * `plug` and `queue` backends share.  Implemented in plug.c, which keeps
 * libnl-route in one file; every function returns 0 or -errno and logs
 * libnl's own message where it fails.
 */
#ifndef TANDEM_NBTC_H
#define TANDEM_NBTC_H

#include <stdbool.h>
#include <stdint.h>

struct nl_sock;

/* Priority of the filters tandem puts on a vif's ingress; found by it. */
#define NETBUF__FILTER_PRIO 0x7a6

/* Mark carried by ARP frames the queue backend re-injects (see queue.c). */
#define NETBUF__REINJECT_MARK 0x746e6401u

/* A connected NETLINK_ROUTE socket in *sk (free with netbuf__nl_close). */
int netbuf__nl_open(struct nl_sock **sk);
void netbuf__nl_close(struct nl_sock *sk);

/* libnl's -NLE_* code as -errno. */
int netbuf__nlerr(int nlerr);

/* "<prefix><ifname>" cut to IFNAMSIZ-1 characters, into out[16]. */
void netbuf__derived_name(char out[16], const char *prefix, const char *ifname);

/* ifindex of name: >0, or -ENODEV. */
int netbuf__ifindex(struct nl_sock *sk, const char *name);

/* Create link name of kind ("ifb", "veth" with peer), set it up.  An
 * existing one is deleted first.  Returns the ifindex (>0) or -errno;
 * -ENOTSUP when the kernel has no such link kind. */
int netbuf__link_create(struct nl_sock *sk, const char *name, const char *kind,
			const char *peer, bool noarp);

/* Give link to the MAC address of link from. */
int netbuf__link_copy_mac(struct nl_sock *sk, const char *from, const char *to);

/* Delete link name; absent is success. */
int netbuf__link_delete(struct nl_sock *sk, const char *name);

/* Add the ingress qdisc on ifindex (an existing one is kept). */
int netbuf__ingress_add(struct nl_sock *sk, int ifindex);

/* Delete the ingress qdisc of ifindex (and all its filters); absent is ok. */
int netbuf__ingress_delete(struct nl_sock *sk, int ifindex);

/*
 * Add a u32 filter on ifindex's ingress at NETBUF__FILTER_PRIO (replacing
 * ours) matching ethertype proto (ETH_P_ALL for every protocol), and, with
 * only_unmarked, only frames whose skb mark is 0; action: mirred redirect
 * to to_ifindex, into its ingress path when to_ingress, else its egress.
 */
int netbuf__redirect_add(struct nl_sock *sk, int ifindex, uint16_t proto,
			 bool only_unmarked, int to_ifindex, bool to_ingress);

#endif
