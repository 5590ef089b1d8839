/*
 * plug.c - the `plug` output-buffering backend (sch_plug on an IFB), and
 * the rtnetlink helpers of nbtc.h.  All of libnl-route lives here.
 *
 * What attach builds for vif V (names are derived so a restarted daemon
 * finds them):
 *
 *   V ingress qdisc (ffff:)
 *     u32 filter, prio NETBUF__FILTER_PRIO, protocol all, match-all,
 *     action mirred egress redirect -> IFB "tnd-V"
 *   tnd-V (ifb, up): root qdisc plug 1: limit = buffer-limit bytes
 *
 * The IFB hands each packet back to V's receive path once the plug lets it
 * go, so the bridge (or the host's stack) sees it exactly as if it had
 * just arrived.  Every protocol is redirected: ARP and IPv6 as well as
 * IPv4 (`xl remus` only redirects `proto ip`).
 *
 * sch_plug keeps one counter for "the last closed epoch": BUFFER and
 * RELEASE_ONE must alternate.  So max_closed_epochs = 1 and the engine
 * stretches epoch N+1 until ack N has arrived.
 */
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/tc_act/tc_mirred.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/filter.h>
#include <linux/rtnetlink.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/act/mirred.h>
#include <netlink/route/action.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/plug.h>
#include <netlink/route/tc.h>

#define LOG_MODULE "netbuf"
#include "../lib/log.h"
#include "nbtc.h"
#include "netbuf.h"

#define PLUG_HANDLE TC_HANDLE(1, 0)
#define INGRESS_HANDLE TC_HANDLE(0xffff, 0)

/* ======================================================================
 * rtnetlink helpers (nbtc.h)
 * ==================================================================== */

int netbuf__nlerr(int nlerr)
{
	switch (nlerr < 0 ? -nlerr : nlerr) {
	case 0: return 0;
	case NLE_EXIST: return -EEXIST;
	case NLE_OBJ_NOTFOUND: return -ENOENT;
	case NLE_NODEV: return -ENODEV;
	case NLE_NOMEM: return -ENOMEM;
	case NLE_PERM: return -EPERM;
	case NLE_NOACCESS: return -EACCES;
	case NLE_OPNOTSUPP: return -EOPNOTSUPP;
	case NLE_INVAL: return -EINVAL;
	case NLE_BUSY: return -EBUSY;
	case NLE_AGAIN: return -EAGAIN;
	case NLE_RANGE: return -ERANGE;
	case NLE_MSGSIZE: return -EMSGSIZE;
	case NLE_NOATTR: return -ENOENT;
	case NLE_AF_NOSUPPORT: return -EAFNOSUPPORT;
	default: return -EIO;
	}
}

int netbuf__nl_open(struct nl_sock **skp)
{
	struct nl_sock *sk = nl_socket_alloc();
	int r;

	*skp = NULL;
	if (!sk)
		return -ENOMEM;
	r = nl_connect(sk, NETLINK_ROUTE);
	if (r < 0) {
		log_error("cannot open an rtnetlink socket: %s", nl_geterror(r));
		nl_socket_free(sk);
		return netbuf__nlerr(r);
	}
	*skp = sk;
	return 0;
}

void netbuf__nl_close(struct nl_sock *sk)
{
	if (sk)
		nl_socket_free(sk);
}

void netbuf__derived_name(char out[16], const char *prefix, const char *ifname)
{
	int room = 15 - (int)strnlen(prefix, 15);	/* (a longer name is cut, as before) */

	snprintf(out, 16, "%s%.*s", prefix, room, ifname);
}

int netbuf__ifindex(struct nl_sock *sk, const char *name)
{
	struct rtnl_link *link = NULL;
	int r;

	r = rtnl_link_get_kernel(sk, 0, name, &link);
	if (r < 0)
		return r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV ? -ENODEV
								   : netbuf__nlerr(r);
	r = rtnl_link_get_ifindex(link);
	rtnl_link_put(link);
	return r > 0 ? r : -ENODEV;
}

int netbuf__link_delete(struct nl_sock *sk, const char *name)
{
	struct rtnl_link *link = rtnl_link_alloc();
	int r, rc = 0;

	if (!link)
		return -ENOMEM;
	rtnl_link_set_name(link, name);
	r = rtnl_link_delete(sk, link);
	if (r < 0 && r != -NLE_OBJ_NOTFOUND && r != -NLE_NODEV) {
		log_error("cannot delete link %s: %s", name, nl_geterror(r));
		rc = netbuf__nlerr(r);
	}
	rtnl_link_put(link);
	return rc;
}

/* Bring name up (and NOARP); returns its ifindex or -errno. */
static int link_up(struct nl_sock *sk, const char *name, bool noarp)
{
	struct rtnl_link *orig = NULL, *change = NULL;
	int r, rc;

	r = rtnl_link_get_kernel(sk, 0, name, &orig);
	if (r < 0) {
		rc = -ENODEV;
		goto out;
	}
	change = rtnl_link_alloc();
	if (!change) {
		rc = -ENOMEM;
		goto out;
	}
	rtnl_link_set_flags(change, IFF_UP | (noarp ? IFF_NOARP : 0));
	r = rtnl_link_change(sk, orig, change, 0);
	if (r < 0) {
		log_error("cannot bring %s up: %s", name, nl_geterror(r));
		rc = netbuf__nlerr(r);
		goto out;
	}
	rc = rtnl_link_get_ifindex(orig);
out:
	if (change)
		rtnl_link_put(change);
	if (orig)
		rtnl_link_put(orig);
	return rc;
}

/* Turn IPv6 off on a helper device so it never sends anything itself. */
static void no_ipv6(const char *name)
{
	char path[96];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
	f = fopen(path, "w");
	if (!f)
		return;		/* no IPv6 at all: nothing to turn off */
	fputs("1\n", f);
	fclose(f);
}

int netbuf__link_create(struct nl_sock *sk, const char *name, const char *kind,
			const char *peer, bool noarp)
{
	struct rtnl_link *link = NULL;
	int r, rc;

	rc = netbuf__link_delete(sk, name);
	if (rc < 0)
		goto out;
	if (peer) {
		rc = netbuf__link_delete(sk, peer);
		if (rc < 0)
			goto out;
		r = rtnl_link_veth_add(sk, name, peer, getpid());
	} else {
		link = rtnl_link_alloc();
		if (!link) {
			rc = -ENOMEM;
			goto out;
		}
		rtnl_link_set_name(link, name);
		r = rtnl_link_set_type(link, kind);
		if (r >= 0)
			r = rtnl_link_add(sk, link, NLM_F_CREATE | NLM_F_EXCL);
	}
	if (r < 0) {
		if (r == -NLE_OPNOTSUPP || r == -NLE_OBJ_NOTFOUND) {
			log_error("the kernel cannot create %s devices (%s): %s", kind,
				  nl_geterror(r),
				  !strcmp(kind, "ifb") ? "load module ifb (CONFIG_IFB)"
						       : "load its module");
			rc = -ENOTSUP;
		} else {
			log_error("cannot create %s device %s: %s", kind, name, nl_geterror(r));
			rc = netbuf__nlerr(r);
		}
		goto out;
	}
	no_ipv6(name);
	if (peer)
		no_ipv6(peer);
	if (peer) {
		rc = link_up(sk, peer, noarp);
		if (rc < 0)
			goto out;
	}
	rc = link_up(sk, name, noarp);
out:
	if (link)
		rtnl_link_put(link);
	return rc;
}

int netbuf__link_copy_mac(struct nl_sock *sk, const char *from, const char *to)
{
	struct rtnl_link *src = NULL, *dst = NULL, *change = NULL;
	int r, rc = 0;

	r = rtnl_link_get_kernel(sk, 0, from, &src);
	if (r >= 0)
		r = rtnl_link_get_kernel(sk, 0, to, &dst);
	if (r < 0) {
		rc = -ENODEV;
		goto out;
	}
	change = rtnl_link_alloc();
	if (!change) {
		rc = -ENOMEM;
		goto out;
	}
	rtnl_link_set_addr(change, rtnl_link_get_addr(src));
	r = rtnl_link_change(sk, dst, change, 0);
	if (r < 0) {
		log_error("cannot set the address of %s: %s", to, nl_geterror(r));
		rc = netbuf__nlerr(r);
	}
out:
	if (change)
		rtnl_link_put(change);
	if (dst)
		rtnl_link_put(dst);
	if (src)
		rtnl_link_put(src);
	return rc;
}

int netbuf__ingress_add(struct nl_sock *sk, int ifindex)
{
	struct rtnl_qdisc *q = rtnl_qdisc_alloc();
	int r, rc = 0;

	if (!q)
		return -ENOMEM;
	rtnl_tc_set_ifindex(TC_CAST(q), ifindex);
	rtnl_tc_set_parent(TC_CAST(q), TC_H_INGRESS);
	rtnl_tc_set_handle(TC_CAST(q), INGRESS_HANDLE);
	r = rtnl_tc_set_kind(TC_CAST(q), "ingress");
	if (r >= 0)
		r = rtnl_qdisc_add(sk, q, NLM_F_CREATE);
	if (r < 0 && r != -NLE_EXIST) {
		log_error("cannot add the ingress qdisc on ifindex %d: %s", ifindex,
			  nl_geterror(r));
		rc = r == -NLE_OBJ_NOTFOUND ? -ENOTSUP : netbuf__nlerr(r);
	}
	rtnl_qdisc_put(q);
	return rc;
}

int netbuf__ingress_delete(struct nl_sock *sk, int ifindex)
{
	struct rtnl_qdisc *q = rtnl_qdisc_alloc();
	int r, rc = 0;

	if (!q)
		return -ENOMEM;
	rtnl_tc_set_ifindex(TC_CAST(q), ifindex);
	rtnl_tc_set_parent(TC_CAST(q), TC_H_INGRESS);
	rtnl_tc_set_handle(TC_CAST(q), INGRESS_HANDLE);
	rtnl_tc_set_kind(TC_CAST(q), "ingress");
	r = rtnl_qdisc_delete(sk, q);
	if (r < 0 && r != -NLE_OBJ_NOTFOUND && r != -NLE_INVAL && r != -NLE_NODEV) {
		log_error("cannot delete the ingress qdisc on ifindex %d: %s", ifindex,
			  nl_geterror(r));
		rc = netbuf__nlerr(r);
	}
	rtnl_qdisc_put(q);
	return rc;
}

/* Delete our filters (prio NETBUF__FILTER_PRIO) on ifindex's ingress. */
static int filter_delete(struct nl_sock *sk, int ifindex)
{
	struct rtnl_cls *cls = rtnl_cls_alloc();
	int r, rc = 0;

	if (!cls)
		return -ENOMEM;
	rtnl_tc_set_ifindex(TC_CAST(cls), ifindex);
	rtnl_tc_set_parent(TC_CAST(cls), INGRESS_HANDLE);
	rtnl_tc_set_kind(TC_CAST(cls), "u32");
	rtnl_cls_set_prio(cls, NETBUF__FILTER_PRIO);
	r = rtnl_cls_delete(sk, cls, 0);
	if (r < 0 && r != -NLE_OBJ_NOTFOUND && r != -NLE_INVAL && r != -NLE_NODEV) {
		log_error("cannot delete the filter on ifindex %d: %s", ifindex,
			  nl_geterror(r));
		rc = netbuf__nlerr(r);
	}
	rtnl_cls_put(cls);
	return rc;
}

/*
 * Built by hand with libmnl: libnl-route's mirred action cannot express an
 * ingress redirect (rtnl_mirred_set_action refuses TCA_INGRESS_REDIR).
 */
int netbuf__redirect_add(struct nl_sock *sk, int ifindex, uint16_t proto,
			 bool only_unmarked, int to_ifindex, bool to_ingress)
{
	char buf[1024], rbuf[8192];
	struct mnl_socket *nl = NULL;
	struct nlmsghdr *nlh;
	struct tcmsg *tcm;
	struct nlattr *opts, *acts, *act, *aopts;
	struct {
		struct tc_u32_sel sel;
		struct tc_u32_key key;
	} sel;
	/* Match (-1: the filter's actions run) when skb->mark == 0. */
	static const struct sock_filter unmarked[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_MARK),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
		BPF_STMT(BPF_RET | BPF_K, 0),
	};
	struct tc_mirred parm;
	unsigned portid;
	int rc, n;

	rc = filter_delete(sk, ifindex);
	if (rc < 0)
		return rc;
	memset(&sel, 0, sizeof(sel));
	sel.sel.flags = TC_U32_TERMINAL;
	sel.sel.nkeys = 1;			/* one key, mask 0: match all */
	memset(&parm, 0, sizeof(parm));
	parm.action = TC_ACT_STOLEN;
	parm.eaction = to_ingress ? TCA_INGRESS_REDIR : TCA_EGRESS_REDIR;
	parm.ifindex = (uint32_t)to_ifindex;

	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_NEWTFILTER;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
	nlh->nlmsg_seq = 1;
	tcm = mnl_nlmsg_put_extra_header(nlh, sizeof(*tcm));
	tcm->tcm_family = AF_UNSPEC;
	tcm->tcm_ifindex = ifindex;
	tcm->tcm_parent = INGRESS_HANDLE;
	tcm->tcm_info = TC_H_MAKE((uint32_t)NETBUF__FILTER_PRIO << 16, htons(proto));
	if (only_unmarked) {
		/* u32's mark match needs CONFIG_CLS_U32_MARK, which kernels
		 * often lack (and then ignore silently): a classic-BPF cls_bpf
		 * program tests the mark instead. */
		mnl_attr_put_strz(nlh, TCA_KIND, "bpf");
		opts = mnl_attr_nest_start(nlh, TCA_OPTIONS);
		mnl_attr_put_u16(nlh, TCA_BPF_OPS_LEN, sizeof(unmarked) / sizeof(unmarked[0]));
		mnl_attr_put(nlh, TCA_BPF_OPS, sizeof(unmarked), unmarked);
		acts = mnl_attr_nest_start(nlh, TCA_BPF_ACT);
	} else {
		mnl_attr_put_strz(nlh, TCA_KIND, "u32");
		opts = mnl_attr_nest_start(nlh, TCA_OPTIONS);
		mnl_attr_put(nlh, TCA_U32_SEL, sizeof(sel), &sel);
		acts = mnl_attr_nest_start(nlh, TCA_U32_ACT);
	}
	act = mnl_attr_nest_start(nlh, 1);
	mnl_attr_put_strz(nlh, TCA_ACT_KIND, "mirred");
	aopts = mnl_attr_nest_start(nlh, TCA_ACT_OPTIONS);
	mnl_attr_put(nlh, TCA_MIRRED_PARMS, sizeof(parm), &parm);
	mnl_attr_nest_end(nlh, aopts);
	mnl_attr_nest_end(nlh, act);
	mnl_attr_nest_end(nlh, acts);
	mnl_attr_nest_end(nlh, opts);

	nl = mnl_socket_open(NETLINK_ROUTE);
	if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		rc = -errno;
		log_perror("cannot open an rtnetlink socket");
		goto out;
	}
	portid = mnl_socket_get_portid(nl);
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
		rc = -errno;
		goto fail;
	}
	n = (int)mnl_socket_recvfrom(nl, rbuf, sizeof(rbuf));
	if (n < 0 || mnl_cb_run(rbuf, (size_t)n, 1, portid, NULL, NULL) < 0) {
		rc = -errno;
		goto fail;
	}
	rc = 0;
	goto out;
fail:
	if (rc == -ENODEV)	/* the kernel has all it needs: a device went away */
		log_error("cannot add the redirect filter on ifindex %d: the interface or its "
			  "buffer device (ifindex %d) went away meanwhile (did the guest stop or "
			  "restart?)", ifindex, to_ifindex);
	else
		log_error("cannot add the u32/mirred redirect filter on ifindex %d: %s "
			  "(needs CONFIG_NET_CLS_U32%s and CONFIG_NET_ACT_MIRRED)",
			  ifindex, strerror(-rc), only_unmarked ? ", CONFIG_NET_CLS_BPF" : "");
	if (rc == -ENOENT || rc == -EOPNOTSUPP)
		rc = -ENOTSUP;
out:
	if (nl)
		mnl_socket_close(nl);
	return rc;
}

/* ======================================================================
 * the plug backend
 * ==================================================================== */

#define PLUG_VIFS 4	/* interfaces one guest sends through (vifD.N, vifD.N-emu) */

struct plug {
	struct nl_sock *sk;
	char vifs[PLUG_VIFS][IFNAMSIZ], ifb[IFNAMSIZ];
	unsigned nvif;
	int ifb_index;
	bool closed;			/* one closed epoch awaits release */
	bool merge;			/* restart: the next close joins the closed epoch */
	uint64_t closed_epoch;
};

/* Send one plug action (TCQ_PLUG_*) to the IFB's root qdisc. */
static int plug_send(struct plug *p, int action, uint32_t limit)
{
	struct rtnl_qdisc *q = rtnl_qdisc_alloc();
	int r, rc = 0;

	if (!q)
		return -ENOMEM;
	rtnl_tc_set_ifindex(TC_CAST(q), p->ifb_index);
	rtnl_tc_set_parent(TC_CAST(q), TC_H_ROOT);
	rtnl_tc_set_handle(TC_CAST(q), PLUG_HANDLE);
	r = rtnl_tc_set_kind(TC_CAST(q), "plug");
	if (r >= 0) {
		switch (action) {
		case TCQ_PLUG_BUFFER: r = rtnl_qdisc_plug_buffer(q); break;
		case TCQ_PLUG_RELEASE_ONE: r = rtnl_qdisc_plug_release_one(q); break;
		case TCQ_PLUG_RELEASE_INDEFINITE:
			r = rtnl_qdisc_plug_release_indefinite(q);
			break;
		default: r = rtnl_qdisc_plug_set_limit(q, (int)limit); break;
		}
	}
	if (r >= 0)
		r = rtnl_qdisc_add(p->sk, q, action == TCQ_PLUG_LIMIT
				   ? NLM_F_CREATE | NLM_F_REPLACE : 0);
	if (r < 0) {
		if (action == TCQ_PLUG_LIMIT &&
		    (r == -NLE_OBJ_NOTFOUND || r == -NLE_OPNOTSUPP)) {
			log_error("the kernel has no sch_plug: load module sch_plug "
				  "(CONFIG_NET_SCH_PLUG) or use netbuf = queue");
			rc = -ENOTSUP;
		} else {
			log_error("plug qdisc on %s: action %d failed: %s", p->ifb, action,
				  nl_geterror(r));
			rc = netbuf__nlerr(r);
		}
	}
	rtnl_qdisc_put(q);
	return rc;
}

static void plug_teardown(struct plug *p)
{
	for (unsigned i = 0; i < p->nvif; i++) {
		int idx = netbuf__ifindex(p->sk, p->vifs[i]);

		if (idx > 0) {
			filter_delete(p->sk, idx);
			netbuf__ingress_delete(p->sk, idx);
		}
	}
	netbuf__link_delete(p->sk, p->ifb);
}

/* "a, b" -> p->vifs (names checked); 0 or -EINVAL (logged). */
static int parse_vifs(struct plug *p, const char *list)
{
	const char *s = list;

	while (*s) {
		size_t n;

		while (*s == ' ' || *s == ',')
			s++;
		n = strcspn(s, ", ");
		if (!n)
			break;
		if (p->nvif == PLUG_VIFS || n >= IFNAMSIZ) {
			log_error("%s: %s", list, n >= IFNAMSIZ ? "an interface name is too long" :
				  "more than 4 interfaces");
			return -EINVAL;
		}
		snprintf(p->vifs[p->nvif++], IFNAMSIZ, "%.*s", (int)n, s);
		s += n;
	}
	if (!p->nvif) {
		log_error("no interface to buffer (vif is empty and the domain gave none)");
		return -EINVAL;
	}
	return 0;
}

static void plug_free(struct netbuf *nb)
{
	struct plug *p = nb->priv;

	if (!p)
		return;
	netbuf__nl_close(p->sk);
	free(p);
	nb->priv = NULL;
}

/*
 * Build the chain above on ifname: one interface, or a comma-separated
 * list of the interfaces one guest sends through (an HVM guest's vifD.N
 * and vifD.N-emu), all redirected into one IFB and one plug, so that an
 * epoch's packets leave together whichever way the guest sent them.  A
 * leftover IFB of an earlier run is recreated (held packets of a dead
 * daemon are dropped, never let out); the filters are replaced.  On any
 * failure everything made is removed and the vifs are left as they were:
 * -ENODEV (no vif), -ENOTSUP (kernel lacks sch_plug, ifb, u32 or mirred),
 * or another -errno.
 */
static int plug_attach(struct netbuf *nb, const char *ifname)
{
	struct plug *p = NULL;
	uint64_t limit = nb->cfg ? nb->cfg->buffer_limit : 0;
	int idx[PLUG_VIFS];
	int rc;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	nb->priv = p;
	if ((rc = parse_vifs(p, ifname)))
		goto out;
	netbuf__derived_name(p->ifb, "tnd-", p->vifs[0]);
	rc = netbuf__nl_open(&p->sk);
	if (rc < 0)
		goto out;
	for (unsigned i = 0; i < p->nvif; i++) {
		idx[i] = netbuf__ifindex(p->sk, p->vifs[i]);
		if (idx[i] < 0) {
			rc = idx[i];
			log_error("interface %s does not exist", p->vifs[i]);
			goto out;
		}
	}
	if (limit == 0 || limit > INT32_MAX)
		limit = limit ? INT32_MAX : 10u << 20;
	rc = netbuf__link_create(p->sk, p->ifb, "ifb", NULL, false);
	if (rc < 0)
		goto out;
	p->ifb_index = rc;
	rc = plug_send(p, TCQ_PLUG_LIMIT, (uint32_t)limit);
	if (rc < 0)
		goto out;
	for (unsigned i = 0; i < p->nvif; i++) {
		rc = netbuf__ingress_add(p->sk, idx[i]);
		if (rc < 0)
			goto out;
		rc = netbuf__redirect_add(p->sk, idx[i], ETH_P_ALL, false, p->ifb_index, false);
		if (rc < 0)
			goto out;
	}
	nb->attached = true;
	log_info("buffering %s through %s (plug, limit %llu bytes, all protocols)",
		 ifname, p->ifb, (unsigned long long)limit);
out:
	if (rc < 0) {
		if (p->sk)
			plug_teardown(p);
		plug_free(nb);
	}
	return rc;
}

static int plug_close_epoch(struct netbuf *nb, uint64_t epoch)
{
	struct plug *p = nb->priv;
	int rc;

	if (!p)
		return -EINVAL;
	if (p->closed && p->merge) {
		/* A new stream's first epoch: the old stream's closed epoch
		 * becomes part of it (no BUFFER: sch_plug keeps one closed
		 * epoch).  What the guest sent since stays in the open epoch
		 * and goes out one release later: later, never earlier. */
		p->merge = false;
		p->closed_epoch = epoch;
		return 0;
	}
	p->merge = false;
	if (p->closed) {
		log_error("epoch %llu closed while epoch %llu still awaits release "
			  "(sch_plug holds one closed epoch)",
			  (unsigned long long)epoch, (unsigned long long)p->closed_epoch);
		return -EBUSY;
	}
	rc = plug_send(p, TCQ_PLUG_BUFFER, 0);
	if (rc < 0)
		return rc;
	p->closed = true;
	p->closed_epoch = epoch;
	return 0;
}

static int plug_release(struct netbuf *nb, uint64_t epoch)
{
	struct plug *p = nb->priv;
	int rc;

	if (!p)
		return -EINVAL;
	if (!p->closed || epoch < p->closed_epoch)
		return 0;	/* nothing closed up to epoch: already out */
	rc = plug_send(p, TCQ_PLUG_RELEASE_ONE, 0);
	if (rc < 0)
		return rc;
	p->closed = false;
	return 0;
}

static void plug_restart(struct netbuf *nb)
{
	struct plug *p = nb->priv;

	if (p)
		p->merge = true;
}

static int plug_release_all(struct netbuf *nb)
{
	struct plug *p = nb->priv;
	int rc;

	if (!p)
		return -EINVAL;
	if (p->closed) {
		rc = plug_send(p, TCQ_PLUG_RELEASE_ONE, 0);
		if (rc < 0)
			return rc;
		p->closed = false;
	}
	return plug_send(p, TCQ_PLUG_RELEASE_INDEFINITE, 0);
}

static void plug_detach(struct netbuf *nb)
{
	struct plug *p = nb->priv;

	if (p) {
		plug_teardown(p);
		log_info("removed the buffering of %s%s (%s)", p->vifs[0],
			 p->nvif > 1 ? " and the guest's other interfaces" : "", p->ifb);
	}
	plug_free(nb);
	nb->attached = false;
}

static void plug_counters(struct netbuf *nb, struct netbuf_counters *c)
{
	struct plug *p = nb->priv;
	struct nl_cache *cache = NULL;
	struct rtnl_qdisc *q = NULL;

	memset(c, 0, sizeof(*c));
	if (!p)
		return;
	c->epochs_held = p->closed ? 1 : 0;
	if (rtnl_qdisc_alloc_cache(p->sk, &cache) < 0)
		return;
	q = rtnl_qdisc_get(cache, p->ifb_index, PLUG_HANDLE);
	if (q) {
		c->held_packets = rtnl_tc_get_stat(TC_CAST(q), RTNL_TC_QLEN);
		c->held_bytes = rtnl_tc_get_stat(TC_CAST(q), RTNL_TC_BACKLOG);
		c->released_packets = rtnl_tc_get_stat(TC_CAST(q), RTNL_TC_PACKETS);
		c->released_bytes = rtnl_tc_get_stat(TC_CAST(q), RTNL_TC_BYTES);
		c->dropped_packets = rtnl_tc_get_stat(TC_CAST(q), RTNL_TC_DROPS);
		rtnl_qdisc_put(q);
	}
	nl_cache_free(cache);
}

const struct netbuf_ops netbuf_plug_ops = {
	.name = "plug",
	.attach = plug_attach,
	.close_epoch = plug_close_epoch,
	.release = plug_release,
	.release_all = plug_release_all,
	.detach = plug_detach,
	.restart = plug_restart,
	.max_closed_epochs = 1,
	.counters = plug_counters,
};
