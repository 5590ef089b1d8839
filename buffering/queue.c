/*
 * queue.c - the `queue` output-buffering backend: the guest's packets wait
 * in the kernel, in an NFQUEUE, and are let go in order with one batch
 * verdict per acknowledged epoch.  Works on kernels without sch_plug, and
 * holds any number of closed epochs.
 *
 * What attach builds for vif V (all found again by name after a crash):
 *
 *   IPv4 and IPv6 (iptables and ip6tables, table raw):
 *     chain "tandem-V": -j NFQUEUE --queue-num Q   (no --queue-bypass)
 *     PREROUTING: -i V -j tandem-V                  (routed vif)
 *                 -m physdev --physdev-in V -j tandem-V  (bridged vif,
 *                                                    via br_netfilter)
 *   ARP: the kernel refuses NFQUEUE in arptables since Linux 6.12 ("NFQUEUE
 *   target: not valid for this family") and nft's `queue` is often not
 *   built, so ARP takes a side path through tc:
 *     V ingress: u32 protocol arp, skb mark 0 -> mirred egress redirect to
 *       veth "tnc-V"; its peer "tni-V" (NOARP, no IPv6) is where a packet
 *       socket reads the frame (ARP frames are copied, <= 60 bytes each).
 *     release: the frame is sent back out of tni-V with skb mark
 *       NETBUF__REINJECT_MARK; tnc-V's ingress redirects it into V's
 *       receive path, where the mark lets it pass the ARP filter.
 *
 * Packets of IPv4/IPv6 are never copied: the queue runs in copy mode
 * PACKET with a range of 1 byte, only so the kernel reports each packet's
 * length (NFQA_CAP_LEN; META mode carries none) for the byte bound.
 *
 * The rules are installed with the iptables/ip6tables commands (fork+exec,
 * no shell), at attach and detach only: libiptc drives only the legacy
 * back end and has no stable API, and building nf_tables rules with xt
 * compat expressions by hand (libnftnl) would duplicate what the
 * iptables-nft command does and break whenever it changes.
 *
 * Threads: attach starts one reader thread, which polls the queue's
 * netlink socket and the ARP packet socket.  Every access to the held
 * list (reader, close_epoch, release) happens under q->mu; close_epoch
 * first drains both sockets so that whatever the kernel queued before the
 * guest was suspended lands in the epoch it belongs to.
 *
 * No fail-open: the queue has no NFQA_CFG_F_FAIL_OPEN and the rules no
 * --queue-bypass; beyond buffer-limit bytes (or the queue's packet bound)
 * packets are dropped and counted, and with no reader (a dead daemon) the
 * kernel drops them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define LOG_MODULE "netbuf"
#include "../lib/log.h"
#include "nbtc.h"
#include "netbuf.h"

#define QUEUE_BASE 0x7400	/* queue numbers 29696.. */
#define QUEUE_SPAN 1024
#define ARP_FRAME_MAX 128

/* One held packet, in arrival order. */
struct held {
	uint64_t seq;
	uint32_t id;			/* NFQUEUE packet id; 0 for ARP */
	uint32_t len;
	uint8_t *frame;			/* ARP only: the frame itself */
};

struct closed {
	uint64_t epoch;
	uint64_t seq_end;		/* packets with seq < seq_end */
};

struct queue {
	char vif[IFNAMSIZ], cap[IFNAMSIZ], inj[IFNAMSIZ], chain[32];
	uint64_t limit;
	uint16_t qnum;
	struct nl_sock *sk;
	struct mnl_socket *nl;
	unsigned portid;
	int arp_fd, inj_index, vif_index;
	int stop[2];
	pthread_t thr;
	bool thr_started;

	pthread_mutex_t mu;
	struct held *h;			/* ring of held packets */
	size_t h_cap, h_head, h_n;
	uint64_t next_seq;
	struct closed *c;		/* closed, unreleased epochs */
	size_t c_cap, c_n;
	bool passthrough;		/* after release_all */
	struct netbuf_counters cnt;
	uint64_t own_drops, own_drop_bytes;
	int err;			/* first reader error, for the log */
};

/* ======================================================================
 * running iptables
 * ==================================================================== */

/* Run argv quietly; returns its exit status, or -errno. */
static int run(char *const argv[])
{
	pid_t pid;
	int status, fd;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static const char *const ipt_cmds[] = { "iptables", "ip6tables" };

/* Remove every jump to our chain, then the chain itself (both families). */
static void rules_remove(struct queue *q)
{
	for (size_t f = 0; f < 2; f++) {
		char *cmd = (char *)ipt_cmds[f];
		char *del_i[] = { cmd, "-w", "-t", "raw", "-D", "PREROUTING", "-i", q->vif,
				  "-j", q->chain, NULL };
		char *del_p[] = { cmd, "-w", "-t", "raw", "-D", "PREROUTING", "-m", "physdev",
				  "--physdev-in", q->vif, "-j", q->chain, NULL };
		char *flush[] = { cmd, "-w", "-t", "raw", "-F", q->chain, NULL };
		char *del[] = { cmd, "-w", "-t", "raw", "-X", q->chain, NULL };

		for (int i = 0; i < 16 && run(del_i) == 0; i++)
			;
		for (int i = 0; i < 16 && run(del_p) == 0; i++)
			;
		run(flush);
		run(del);
	}
}

/*
 * (Re)install the rules: our chain is created or flushed and refilled
 * with the current queue number before any jump to it is added, so a
 * leftover jump from a crashed run keeps dropping (no listener) until the
 * chain points at this run's queue.
 */
static int rules_install(struct queue *q)
{
	char qs[16];

	snprintf(qs, sizeof(qs), "%u", q->qnum);
	for (size_t f = 0; f < 2; f++) {
		char *cmd = (char *)ipt_cmds[f];
		char *mk[] = { cmd, "-w", "-t", "raw", "-N", q->chain, NULL };
		char *flush[] = { cmd, "-w", "-t", "raw", "-F", q->chain, NULL };
		char *qr[] = { cmd, "-w", "-t", "raw", "-A", q->chain, "-j", "NFQUEUE",
			       "--queue-num", qs, NULL };
		char *chk_i[] = { cmd, "-w", "-t", "raw", "-C", "PREROUTING", "-i", q->vif,
				  "-j", q->chain, NULL };
		char *add_i[] = { cmd, "-w", "-t", "raw", "-I", "PREROUTING", "1", "-i",
				  q->vif, "-j", q->chain, NULL };
		char *chk_p[] = { cmd, "-w", "-t", "raw", "-C", "PREROUTING", "-m", "physdev",
				  "--physdev-in", q->vif, "-j", q->chain, NULL };
		char *add_p[] = { cmd, "-w", "-t", "raw", "-I", "PREROUTING", "1", "-m",
				  "physdev", "--physdev-in", q->vif, "-j", q->chain, NULL };
		int r;

		run(mk);
		r = run(flush);
		if (r == 0)
			r = run(qr);
		if (r != 0) {
			log_error("%s: cannot install '-t raw -A %s -j NFQUEUE --queue-num %s' "
				  "(exit %d): the kernel needs NFQUEUE "
				  "(CONFIG_NETFILTER_NETLINK_QUEUE, xt_NFQUEUE) and the raw table",
				  cmd, q->chain, qs, r);
			return r == 127 || r < 0 ? -ENOENT : -ENOTSUP;
		}
		if (run(chk_i) != 0 && (r = run(add_i)) != 0) {
			log_error("%s: cannot add '-t raw -I PREROUTING -i %s -j %s' (exit %d)",
				  cmd, q->vif, q->chain, r);
			return -ENOTSUP;
		}
		if (run(chk_p) != 0 && (r = run(add_p)) != 0) {
			log_error("%s: cannot add '-m physdev --physdev-in %s' (exit %d): "
				  "needs xt_physdev (CONFIG_NETFILTER_XT_MATCH_PHYSDEV)",
				  cmd, q->vif, r);
			return -ENOTSUP;
		}
	}
	return 0;
}

/* ======================================================================
 * the netfilter queue (libmnl + libnetfilter_queue's nlmsg helpers)
 * ==================================================================== */

/* Send nlh; with ack, wait for the kernel's answer.  0 or -errno. */
static int nfq_send(struct queue *q, struct nlmsghdr *nlh, bool ack)
{
	char buf[8192];
	int n;

	if (ack)
		nlh->nlmsg_flags |= NLM_F_ACK;
	if (mnl_socket_sendto(q->nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	if (!ack)
		return 0;
	for (;;) {
		n = (int)mnl_socket_recvfrom(q->nl, buf, sizeof(buf));
		if (n < 0)
			return -errno;
		n = mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, q->portid, NULL, NULL);
		if (n < 0)
			return -errno;
		if (n == MNL_CB_STOP)
			return 0;
	}
}

static int verdict(struct queue *q, int type, uint32_t id, int v)
{
	char buf[256];
	struct nlmsghdr *nlh = nfq_nlmsg_put(buf, type, q->qnum);

	nfq_nlmsg_verdict_put(nlh, (int)id, v);
	return nfq_send(q, nlh, false);
}

static size_t queue_maxlen(const struct queue *q)
{
	uint64_t n = q->limit / 64;

	return n < 64 ? 64 : n > (1u << 20) ? (1u << 20) : (size_t)n;
}

/* Open, bind a free queue number from the vif's name, set copy mode. */
static int queue_nfq_open(struct queue *q)
{
	char buf[256];
	struct nlmsghdr *nlh;
	uint32_t h = 5381;
	int one = 1, rc = -EBUSY, r, size = 8 << 20;

	q->nl = mnl_socket_open(NETLINK_NETFILTER);
	if (!q->nl) {
		log_perror("cannot open a netfilter netlink socket");
		return -errno;
	}
	if (mnl_socket_bind(q->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		log_perror("cannot bind the netfilter netlink socket");
		return -errno;
	}
	q->portid = mnl_socket_get_portid(q->nl);
	mnl_socket_setsockopt(q->nl, NETLINK_NO_ENOBUFS, &one, sizeof(one));
	setsockopt(mnl_socket_get_fd(q->nl), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
	for (const char *s = q->vif; *s; s++)
		h = h * 33 + (uint8_t)*s;
	for (unsigned i = 0; i < 32 && (rc == -EBUSY || rc == -EPERM); i++) {
		q->qnum = (uint16_t)(QUEUE_BASE + (h + i) % QUEUE_SPAN);
		nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q->qnum);
		nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
		rc = nfq_send(q, nlh, true);
	}
	if (rc < 0) {
		if (rc == -ENOENT || rc == -EPROTONOSUPPORT || rc == -EOPNOTSUPP) {
			log_error("the kernel has no NFQUEUE: enable "
				  "CONFIG_NETFILTER_NETLINK_QUEUE (module nfnetlink_queue) "
				  "and xt_NFQUEUE, or use netbuf = plug");
			return -ENOTSUP;
		}
		log_error("cannot bind a netfilter queue for %s: %s", q->vif, strerror(-rc));
		return rc;
	}
	nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q->qnum);
	nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, 1);
	nfq_nlmsg_cfg_put_qmaxlen(nlh, (uint32_t)queue_maxlen(q));
	r = nfq_send(q, nlh, true);
	if (r < 0) {
		log_error("cannot configure netfilter queue %u: %s", q->qnum, strerror(-r));
		return r;
	}
	return 0;
}

/* Kernel-side drops of our queue (queue full, failed delivery). */
static uint64_t kernel_drops(const struct queue *q)
{
	FILE *f = fopen("/proc/net/netfilter/nfnetlink_queue", "r");
	unsigned num, portid, total, mode, range, qd, ud;
	uint64_t drops = 0;
	char line[256];

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%u %u %u %u %u %u %u", &num, &portid, &total, &mode,
			   &range, &qd, &ud) == 7 && num == q->qnum)
			drops = (uint64_t)qd + ud;
	fclose(f);
	return drops;
}

/* ======================================================================
 * the held list (callers hold q->mu)
 * ==================================================================== */

static struct held *held_at(struct queue *q, size_t i)
{
	return &q->h[(q->h_head + i) % q->h_cap];
}

static int held_push(struct queue *q, uint32_t id, uint32_t len, const void *frame)
{
	struct held *e;

	if (q->cnt.held_bytes + len > q->limit || q->h_n >= queue_maxlen(q)) {
		q->own_drops++;
		q->own_drop_bytes += len;
		return -ENOBUFS;
	}
	if (q->h_n == q->h_cap) {
		size_t ncap = q->h_cap ? q->h_cap * 2 : 256;
		struct held *nh = calloc(ncap, sizeof(*nh));

		if (!nh)
			return -ENOMEM;
		for (size_t i = 0; i < q->h_n; i++)
			nh[i] = *held_at(q, i);
		free(q->h);
		q->h = nh;
		q->h_cap = ncap;
		q->h_head = 0;
	}
	e = &q->h[(q->h_head + q->h_n) % q->h_cap];
	e->seq = q->next_seq++;
	e->id = id;
	e->len = len;
	e->frame = NULL;
	if (frame) {
		e->frame = malloc(len);
		if (!e->frame)
			return -ENOMEM;
		memcpy(e->frame, frame, len);
	}
	q->h_n++;
	q->cnt.held_packets++;
	q->cnt.held_bytes += len;
	return 0;
}

/* Let out every held packet with seq < seq_end, in order. */
static int held_release(struct queue *q, uint64_t seq_end)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET };
	uint32_t last_id = 0;
	bool have_id = false;
	int rc = 0, r;

	sll.sll_ifindex = q->inj_index;
	sll.sll_halen = ETH_ALEN;
	while (q->h_n && q->h[q->h_head].seq < seq_end) {
		struct held *e = &q->h[q->h_head];

		if (e->frame) {
			/* Queued packets first, so order is kept across the two paths. */
			if (have_id) {
				r = verdict(q, NFQNL_MSG_VERDICT_BATCH, last_id, NF_ACCEPT);
				if (r < 0 && !rc)
					rc = r;
				have_id = false;
			}
			memcpy(sll.sll_addr, e->frame, ETH_ALEN);
			if (sendto(q->arp_fd, e->frame, e->len, 0, (struct sockaddr *)&sll,
				   sizeof(sll)) < 0 && !rc)
				rc = -errno;
			free(e->frame);
		} else {
			last_id = e->id;
			have_id = true;
		}
		q->cnt.held_packets--;
		q->cnt.held_bytes -= e->len;
		q->cnt.released_packets++;
		q->cnt.released_bytes += e->len;
		q->h_head = (q->h_head + 1) % q->h_cap;
		q->h_n--;
	}
	if (have_id) {
		r = verdict(q, NFQNL_MSG_VERDICT_BATCH, last_id, NF_ACCEPT);
		if (r < 0 && !rc)
			rc = r;
	}
	if (rc < 0)
		log_error("releasing held packets of %s: %s", q->vif, strerror(-rc));
	return rc;
}

/* ======================================================================
 * reading (reader thread, and close_epoch's drain)
 * ==================================================================== */

static int on_packet(const struct nlmsghdr *nlh, void *data)
{
	struct queue *q = data;
	struct nlattr *attr[NFQA_MAX + 1] = { NULL };
	struct nfqnl_msg_packet_hdr *ph;
	uint32_t id, len;

	if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR])
		return MNL_CB_OK;
	ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
	id = ntohl(ph->packet_id);
	if (attr[NFQA_CAP_LEN])
		len = ntohl(mnl_attr_get_u32(attr[NFQA_CAP_LEN]));
	else if (attr[NFQA_PAYLOAD])
		len = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
	else
		len = 0;
	if (q->passthrough) {
		verdict(q, NFQNL_MSG_VERDICT, id, NF_ACCEPT);
		q->cnt.released_packets++;
		q->cnt.released_bytes += len;
	} else if (held_push(q, id, len, NULL) < 0) {
		verdict(q, NFQNL_MSG_VERDICT, id, NF_DROP);
	}
	return MNL_CB_OK;
}

/* Read whatever is pending on both sockets, without blocking. */
static void drain(struct queue *q)
{
	static __thread char buf[1 << 16];
	uint8_t frame[ARP_FRAME_MAX + 1];
	ssize_t n;

	for (;;) {
		n = recv(mnl_socket_get_fd(q->nl), buf, sizeof(buf), MSG_DONTWAIT);
		if (n <= 0)
			break;
		mnl_cb_run(buf, (size_t)n, 0, q->portid, on_packet, q);
	}
	for (;;) {
		n = recv(q->arp_fd, frame, sizeof(frame), MSG_DONTWAIT);
		if (n <= 0)
			break;
		if (n > ARP_FRAME_MAX)
			continue;	/* not an ARP frame we redirected */
		if (q->passthrough) {
			struct sockaddr_ll sll = { .sll_family = AF_PACKET,
						   .sll_ifindex = q->inj_index,
						   .sll_halen = ETH_ALEN };
			memcpy(sll.sll_addr, frame, ETH_ALEN);
			sendto(q->arp_fd, frame, (size_t)n, 0, (struct sockaddr *)&sll,
			       sizeof(sll));
		} else {
			held_push(q, 0, (uint32_t)n, frame);
		}
	}
}

static void *reader(void *arg)
{
	struct queue *q = arg;
	struct pollfd p[3] = {
		{ .fd = mnl_socket_get_fd(q->nl), .events = POLLIN },
		{ .fd = q->arp_fd, .events = POLLIN },
		{ .fd = q->stop[0], .events = POLLIN },
	};

	for (;;) {
		if (poll(p, 3, -1) < 0 && errno != EINTR)
			break;
		if (p[2].revents)
			break;
		pthread_mutex_lock(&q->mu);
		drain(q);
		pthread_mutex_unlock(&q->mu);
	}
	return NULL;
}

/* ======================================================================
 * the backend
 * ==================================================================== */

static void queue_teardown(struct queue *q)
{
	int idx;

	rules_remove(q);
	if (q->sk) {
		idx = netbuf__ifindex(q->sk, q->vif);
		if (idx > 0)
			netbuf__ingress_delete(q->sk, idx);
		netbuf__link_delete(q->sk, q->cap);
		netbuf__link_delete(q->sk, q->inj);
	}
}

static void queue_free(struct netbuf *nb)
{
	struct queue *q = nb->priv;

	if (!q)
		return;
	if (q->thr_started) {
		if (write(q->stop[1], "x", 1) < 0)
			log_perror("cannot stop the queue reader");
		pthread_join(q->thr, NULL);
	}
	if (q->stop[0] >= 0)
		close(q->stop[0]);
	if (q->stop[1] >= 0)
		close(q->stop[1]);
	if (q->nl)
		mnl_socket_close(q->nl);	/* the kernel drops what is still queued */
	if (q->arp_fd >= 0)
		close(q->arp_fd);
	netbuf__nl_close(q->sk);
	for (size_t i = 0; i < q->h_n; i++)
		free(held_at(q, i)->frame);
	free(q->h);
	free(q->c);
	pthread_mutex_destroy(&q->mu);
	free(q);
	nb->priv = NULL;
}

/* The ARP side path: veth pair, packet socket, tc redirects. */
static int arp_path(struct queue *q)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET };
	uint32_t mark = NETBUF__REINJECT_MARK;
	int one = 1, cap_index, rc;

	rc = netbuf__link_create(q->sk, q->cap, "veth", q->inj, true);
	if (rc < 0)
		return rc;
	cap_index = rc;
	rc = netbuf__link_copy_mac(q->sk, q->vif, q->cap);
	if (rc < 0)
		return rc;
	q->inj_index = netbuf__ifindex(q->sk, q->inj);
	if (q->inj_index < 0)
		return q->inj_index;
	q->arp_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (q->arp_fd < 0) {
		log_perror("cannot open a packet socket");
		return -errno;
	}
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = q->inj_index;
	if (setsockopt(q->arp_fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0 ||
	    setsockopt(q->arp_fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0 ||
	    bind(q->arp_fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		log_perror("cannot set up the packet socket on %s", q->inj);
		return -errno;
	}
	rc = netbuf__ingress_add(q->sk, cap_index);
	if (rc == 0)
		rc = netbuf__redirect_add(q->sk, cap_index, ETH_P_ALL, false, q->vif_index, true);
	if (rc == 0)
		rc = netbuf__ingress_add(q->sk, q->vif_index);
	if (rc == 0)
		rc = netbuf__redirect_add(q->sk, q->vif_index, ETH_P_ARP, true, cap_index, false);
	return rc;
}

/*
 * Bind a queue, start the reader, build the ARP side path, then install
 * the rules (last, so that no packet is queued before someone reads it).
 * Leftovers of an earlier run on ifname (chains, jumps, veths, filters)
 * are replaced.  Failure removes everything: -ENODEV (no vif), -ENOTSUP
 * (kernel lacks NFQUEUE, u32/mirred or veth), -ENOENT (no iptables).
 */
static int queue_attach(struct netbuf *nb, const char *ifname)
{
	struct queue *q;
	int rc;

	if (strchr(ifname, ',')) {
		log_error("netbuf = queue buffers one interface, and the guest sends through %s: "
			  "use netbuf = plug", ifname);
		return -EINVAL;
	}
	if (strlen(ifname) >= IFNAMSIZ) {
		log_error("interface name too long: %s", ifname);
		return -EINVAL;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	nb->priv = q;
	q->arp_fd = q->stop[0] = q->stop[1] = -1;
	pthread_mutex_init(&q->mu, NULL);
	snprintf(q->vif, sizeof(q->vif), "%s", ifname);
	netbuf__derived_name(q->cap, "tnc-", ifname);
	netbuf__derived_name(q->inj, "tni-", ifname);
	snprintf(q->chain, sizeof(q->chain), "tandem-%s", ifname);
	q->limit = nb->cfg && nb->cfg->buffer_limit ? nb->cfg->buffer_limit : 10u << 20;
	rc = netbuf__nl_open(&q->sk);
	if (rc < 0)
		goto out;
	q->vif_index = netbuf__ifindex(q->sk, ifname);
	if (q->vif_index < 0) {
		rc = q->vif_index;
		log_error("interface %s does not exist", ifname);
		goto out;
	}
	rc = queue_nfq_open(q);
	if (rc < 0)
		goto out;
	rc = arp_path(q);
	if (rc < 0)
		goto out;
	if (pipe2(q->stop, O_CLOEXEC) < 0) {
		rc = -errno;
		goto out;
	}
	rc = -pthread_create(&q->thr, NULL, reader, q);
	if (rc < 0)
		goto out;
	q->thr_started = true;
	rc = rules_install(q);
	if (rc < 0)
		goto out;
	nb->attached = true;
	log_info("buffering %s in netfilter queue %u (queue, limit %llu bytes, "
		 "IPv4+IPv6 via NFQUEUE, ARP via %s)", ifname, q->qnum,
		 (unsigned long long)q->limit, q->cap);
out:
	if (rc < 0) {
		queue_teardown(q);
		queue_free(nb);
	}
	return rc;
}

static int queue_close_epoch(struct netbuf *nb, uint64_t epoch)
{
	struct queue *q = nb->priv;
	int rc = 0;

	if (!q)
		return -EINVAL;
	pthread_mutex_lock(&q->mu);
	drain(q);
	if (q->c_n == q->c_cap) {
		size_t ncap = q->c_cap ? q->c_cap * 2 : 64;
		struct closed *nc = realloc(q->c, ncap * sizeof(*nc));

		if (!nc) {
			rc = -ENOMEM;
			goto out;
		}
		q->c = nc;
		q->c_cap = ncap;
	}
	q->c[q->c_n].epoch = epoch;
	q->c[q->c_n].seq_end = q->next_seq;
	q->c_n++;
	q->passthrough = false;		/* held again from this close on */
	q->cnt.epochs_held = q->c_n;
out:
	pthread_mutex_unlock(&q->mu);
	return rc;
}

static int queue_release(struct netbuf *nb, uint64_t epoch)
{
	struct queue *q = nb->priv;
	uint64_t seq_end = 0;
	size_t k = 0;
	int rc = 0;

	if (!q)
		return -EINVAL;
	pthread_mutex_lock(&q->mu);
	while (k < q->c_n && q->c[k].epoch <= epoch)
		seq_end = q->c[k++].seq_end;
	if (k) {
		rc = held_release(q, seq_end);
		memmove(q->c, q->c + k, (q->c_n - k) * sizeof(*q->c));
		q->c_n -= k;
		q->cnt.epochs_held = q->c_n;
	}
	pthread_mutex_unlock(&q->mu);
	return rc;
}

static int queue_release_all(struct netbuf *nb)
{
	struct queue *q = nb->priv;
	int rc;

	if (!q)
		return -EINVAL;
	pthread_mutex_lock(&q->mu);
	drain(q);
	rc = held_release(q, UINT64_MAX);
	q->c_n = 0;
	q->cnt.epochs_held = 0;
	q->passthrough = true;
	pthread_mutex_unlock(&q->mu);
	return rc;
}

static void queue_detach(struct netbuf *nb)
{
	struct queue *q = nb->priv;

	if (q) {
		queue_teardown(q);
		log_info("removed the buffering of %s (queue %u, %s)", q->vif, q->qnum, q->cap);
	}
	queue_free(nb);
	nb->attached = false;
}

static void queue_counters(struct netbuf *nb, struct netbuf_counters *c)
{
	struct queue *q = nb->priv;

	memset(c, 0, sizeof(*c));
	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	*c = q->cnt;
	c->dropped_packets = q->own_drops;
	c->dropped_bytes = q->own_drop_bytes;
	pthread_mutex_unlock(&q->mu);
	c->dropped_packets += kernel_drops(q);
}

const struct netbuf_ops netbuf_queue_ops = {
	.name = "queue",
	.attach = queue_attach,
	.close_epoch = queue_close_epoch,
	.release = queue_release,
	.release_all = queue_release_all,
	.detach = queue_detach,
	.max_closed_epochs = 1u << 20,
	.counters = queue_counters,
};
