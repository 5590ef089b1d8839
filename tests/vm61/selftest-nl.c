/* tests/vm61/selftest-nl.c — built on the host against libnl-route-3 by
 * selftest.sh and run inside the vm61 guest: adds a plug qdisc to the link
 * named argv[1] through libnl, buffers, releases, and prints the kernel
 * release it ran on. */
#include <stdio.h>
#include <sys/utsname.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/plug.h>

int main(int argc, char **argv)
{
	struct utsname u;
	struct nl_sock *sk;
	struct nl_cache *links;
	struct rtnl_qdisc *q;
	int ifindex, err;

	if (argc != 2) {
		fprintf(stderr, "usage: %s IFNAME\n", argv[0]);
		return 2;
	}
	uname(&u);
	sk = nl_socket_alloc();
	if (!sk || nl_connect(sk, NETLINK_ROUTE) < 0) {
		fprintf(stderr, "nl_connect failed\n");
		return 1;
	}
	if ((err = rtnl_link_alloc_cache(sk, AF_UNSPEC, &links)) < 0) {
		fprintf(stderr, "link cache: %s\n", nl_geterror(err));
		return 1;
	}
	ifindex = rtnl_link_name2i(links, argv[1]);
	if (!ifindex) {
		fprintf(stderr, "no link %s\n", argv[1]);
		return 1;
	}
	q = rtnl_qdisc_alloc();
	rtnl_tc_set_ifindex(TC_CAST(q), ifindex);
	rtnl_tc_set_parent(TC_CAST(q), TC_H_ROOT);
	rtnl_tc_set_handle(TC_CAST(q), TC_HANDLE(1, 0));
	if ((err = rtnl_tc_set_kind(TC_CAST(q), "plug")) < 0) {
		fprintf(stderr, "set kind plug: %s\n", nl_geterror(err));
		return 1;
	}
	rtnl_qdisc_plug_set_limit(q, 32768);
	if ((err = rtnl_qdisc_add(sk, q, NLM_F_CREATE | NLM_F_EXCL)) < 0) {
		fprintf(stderr, "add plug qdisc: %s\n", nl_geterror(err));
		return 1;
	}
	rtnl_qdisc_plug_buffer(q);
	if ((err = rtnl_qdisc_add(sk, q, NLM_F_REPLACE)) < 0) {
		fprintf(stderr, "plug buffer: %s\n", nl_geterror(err));
		return 1;
	}
	rtnl_qdisc_plug_release_one(q);
	if ((err = rtnl_qdisc_add(sk, q, NLM_F_REPLACE)) < 0) {
		fprintf(stderr, "plug release_one: %s\n", nl_geterror(err));
		return 1;
	}
	printf("libnl plug qdisc ok on %s (kernel %s)\n", argv[1], u.release);
	rtnl_qdisc_put(q);
	nl_cache_free(links);
	nl_socket_free(sk);
	return 0;
}
