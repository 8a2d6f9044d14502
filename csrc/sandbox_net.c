/*
** sandbox_net.c -- the sandbox's own network, plumbed by the launcher
** (sandbox.h lists dtlua-sandbox's files).
**
** --net veth:HOSTIF:HOSTADDR/PLEN:SANDBOXADDR[:GROUP] gives the sandbox a
** network namespace of its own (created by clone3 with its user namespace,
** so the sandbox's root owns it: CAP_NET_ADMIN there, `ip tuntap`, routes)
** and one link to the host: a veth pair whose host end HOSTIF carries
** HOSTADDR/PLEN (and the interface group GROUP, which the caller's firewall
** rules match) and whose other end is the sandbox's eth0 with SANDBOXADDR,
** up, with a default route through HOSTADDR.  A routed point-to-point link:
** no bridge, no ARP between sandboxes.  What the sandbox may reach through
** it is the caller's firewall's business (dtlocal: nftables in the host's
** namespace, out of the sandbox's reach; doc/sandbox.md).
**
** Everything is done over rtnetlink by the launcher itself, between clone3
** and releasing init (no `ip` executed: a handful of round trips, well
** under a millisecond).  The host end lives as long as the sandbox's
** namespace: when its last process is gone the kernel deletes the pair.
*/

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/socket.h>

#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>

#include "sandbox.h"

/* --- parsing ------------------------------------------------------------ */

static int parse_ip4 (const char *s, size_t n, uint32_t *out) {
  char buf[INET_ADDRSTRLEN];
  struct in_addr a;
  if (n == 0 || n >= sizeof buf) return 0;
  memcpy(buf, s, n);
  buf[n] = '\0';
  if (inet_pton(AF_INET, buf, &a) != 1) return 0;
  *out = a.s_addr;
  return 1;
}

/* HOSTIF:HOSTADDR/PLEN:SANDBOXADDR[:GROUP] (after "veth:"); 0 if malformed. */
int net_parse_veth (Opts *o, const char *spec) {
  const char *p = spec, *e;
  size_t n;
  char *end;
  unsigned long v;
  e = strchr(p, ':');
  if (e == NULL) return 0;
  n = (size_t)(e - p);
  if (n == 0 || n >= IFNAMSIZ) return 0;
  memcpy(o->veth_host, p, n);
  o->veth_host[n] = '\0';
  for (size_t i = 0; i < n; i++)
    if (!(o->veth_host[i] >= 'a' && o->veth_host[i] <= 'z') &&
        !(o->veth_host[i] >= '0' && o->veth_host[i] <= '9') && o->veth_host[i] != '-')
      return 0;
  p = e + 1;
  e = strchr(p, '/');
  if (e == NULL || !parse_ip4(p, (size_t)(e - p), &o->veth_host_addr)) return 0;
  p = e + 1;
  errno = 0;
  v = strtoul(p, &end, 10);
  if (errno != 0 || end == p || *end != ':' || v < 8 || v > 31) return 0;
  o->veth_plen = (int)v;
  p = end + 1;
  e = strchr(p, ':');
  n = e ? (size_t)(e - p) : strlen(p);
  if (!parse_ip4(p, n, &o->veth_addr)) return 0;
  if (e != NULL) {
    p = e + 1;
    errno = 0;
    v = strtoul(p, &end, 10);
    if (errno != 0 || end == p || *end != '\0' || v > 0xffffffffUL) return 0;
    o->veth_group = (unsigned)v;
  }
  if (o->veth_addr == o->veth_host_addr) return 0;
  {  /* both ends on the same subnet, or the default route has no gateway */
    uint32_t mask = htonl(o->veth_plen == 0 ? 0 : ~0U << (32 - o->veth_plen));
    if ((o->veth_addr & mask) != (o->veth_host_addr & mask)) return 0;
  }
  o->veth = 1;
  return 1;
}


/* --- rtnetlink ---------------------------------------------------------- */

typedef struct Msg {
  struct nlmsghdr *h;
  char buf[1024];
} Msg;

static void msg_init (Msg *m, int type, int flags) {
  memset(m->buf, 0, sizeof m->buf);
  m->h = (struct nlmsghdr *)m->buf;
  m->h->nlmsg_len = NLMSG_LENGTH(0);
  m->h->nlmsg_type = (unsigned short)type;
  m->h->nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
}

static void *msg_put (Msg *m, const void *data, size_t len) {
  char *at = m->buf + NLMSG_ALIGN(m->h->nlmsg_len);
  if (NLMSG_ALIGN(m->h->nlmsg_len) + NLMSG_ALIGN(len) > sizeof m->buf)
    die(EXIT_INTERNAL, "network: netlink message too long");
  if (data) memcpy(at, data, len);
  m->h->nlmsg_len = (unsigned)(NLMSG_ALIGN(m->h->nlmsg_len) + NLMSG_ALIGN(len));
  return at;
}

static struct rtattr *attr_put (Msg *m, int type, const void *data, size_t len) {
  struct rtattr *a = msg_put(m, NULL, RTA_LENGTH(len));
  a->rta_type = (unsigned short)type;
  a->rta_len = (unsigned short)RTA_LENGTH(len);
  if (data) memcpy(RTA_DATA(a), data, len);
  return a;
}

/* A nest: opened with its header, closed by setting its length. */
static void attr_end (Msg *m, struct rtattr *nest) {
  nest->rta_len = (unsigned short)(m->buf + m->h->nlmsg_len - (char *)nest);
}

static int nl_open (void) {
  struct sockaddr_nl sa;
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s < 0) die_errno(EXIT_NS, "network: netlink socket");
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  if (bind(s, (struct sockaddr *)&sa, sizeof sa) != 0) die_errno(EXIT_NS, "network: bind netlink");
  return s;
}

/* Send m, wait for its answer: 0 (acked), or -errno. */
static int nl_talk (int s, Msg *m) {
  static unsigned seq;
  char buf[8192];
  m->h->nlmsg_seq = ++seq;
  if (send(s, m->buf, m->h->nlmsg_len, 0) != (ssize_t)m->h->nlmsg_len)
    die_errno(EXIT_NS, "network: netlink send");
  for (;;) {
    ssize_t n = recv(s, buf, sizeof buf, 0);
    struct nlmsghdr *h;
    int len;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die_errno(EXIT_NS, "network: netlink receive");
    len = (int)n;
    for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != m->h->nlmsg_seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *e = NLMSG_DATA(h);
        return e->error;
      }
    }
  }
}

static void nl_do (int s, Msg *m, const char *what, const char *ifname) {
  int r = nl_talk(s, m);
  if (r < 0) {
    errno = -r;
    die_errno(EXIT_NS, "network: %s %s", what, ifname);
  }
}

static void link_up (int s, int index, const char *ifname) {
  Msg m;
  struct ifinfomsg ifi;
  msg_init(&m, RTM_NEWLINK, 0);
  memset(&ifi, 0, sizeof ifi);
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = index;
  ifi.ifi_flags = IFF_UP;
  ifi.ifi_change = IFF_UP;
  msg_put(&m, &ifi, sizeof ifi);
  nl_do(s, &m, "bring up", ifname);
}

static void addr_add (int s, int index, uint32_t addr, int plen, const char *ifname) {
  Msg m;
  struct ifaddrmsg ifa;
  msg_init(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
  memset(&ifa, 0, sizeof ifa);
  ifa.ifa_family = AF_INET;
  ifa.ifa_prefixlen = (unsigned char)plen;
  ifa.ifa_index = (unsigned)index;
  msg_put(&m, &ifa, sizeof ifa);
  attr_put(&m, IFA_LOCAL, &addr, 4);
  attr_put(&m, IFA_ADDRESS, &addr, 4);
  nl_do(s, &m, "address", ifname);
}

/* Between clone3 and "go": the veth pair, its host end's address, and,
** through a netlink socket opened in the child's namespace, eth0's address,
** eth0 up and the default route.  Init brings lo up itself. */
void net_plumb (Ctx *c, pid_t child) {
  const Opts *o = c->o;
  Msg m;
  struct ifinfomsg ifi;
  struct rtattr *li, *data, *peer;
  char path[64];
  int s, cs, self_ns, child_ns, r, host_index, eth0;
  uint32_t pid = (uint32_t)child;

  s = nl_open();
  /* a host end of the same name can only be a leftover (the caller keeps
  ** names unique per running sandbox): its namespace is gone, or going */
  msg_init(&m, RTM_DELLINK, 0);
  memset(&ifi, 0, sizeof ifi);
  ifi.ifi_family = AF_UNSPEC;
  msg_put(&m, &ifi, sizeof ifi);
  attr_put(&m, IFLA_IFNAME, o->veth_host, strlen(o->veth_host) + 1);
  r = nl_talk(s, &m);
  if (r < 0 && r != -ENODEV) {
    errno = -r;
    die_errno(EXIT_NS, "network: remove the leftover %s", o->veth_host);
  }

  msg_init(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  memset(&ifi, 0, sizeof ifi);
  ifi.ifi_family = AF_UNSPEC;
  msg_put(&m, &ifi, sizeof ifi);
  attr_put(&m, IFLA_IFNAME, o->veth_host, strlen(o->veth_host) + 1);
  if (o->veth_group) attr_put(&m, IFLA_GROUP, &o->veth_group, 4);
  li = attr_put(&m, IFLA_LINKINFO, NULL, 0);
  attr_put(&m, IFLA_INFO_KIND, "veth", 4);
  data = attr_put(&m, IFLA_INFO_DATA, NULL, 0);
  peer = attr_put(&m, VETH_INFO_PEER, NULL, 0);
  msg_put(&m, &ifi, sizeof ifi);   /* the peer's own ifinfomsg */
  attr_put(&m, IFLA_IFNAME, "eth0", 5);
  attr_put(&m, IFLA_NET_NS_PID, &pid, 4);
  attr_end(&m, peer);
  attr_end(&m, data);
  attr_end(&m, li);
  nl_do(s, &m, "create the veth pair", o->veth_host);

  host_index = (int)if_nametoindex(o->veth_host);
  if (host_index == 0) die_errno(EXIT_NS, "network: find %s", o->veth_host);
  addr_add(s, host_index, o->veth_host_addr, o->veth_plen, o->veth_host);
  link_up(s, host_index, o->veth_host);
  close(s);

  /* a netlink socket stays in the namespace it was made in */
  self_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  snprintf(path, sizeof path, "/proc/%d/ns/net", (int)child);
  child_ns = open(path, O_RDONLY | O_CLOEXEC);
  if (self_ns < 0 || child_ns < 0) die_errno(EXIT_NS, "network: open %s", path);
  if (setns(child_ns, CLONE_NEWNET) != 0) die_errno(EXIT_NS, "network: enter the sandbox's namespace");
  cs = nl_open();
  eth0 = (int)if_nametoindex("eth0");   /* an ioctl on a socket made here */
  if (eth0 == 0) die_errno(EXIT_NS, "network: find eth0 in the sandbox's namespace");
  if (setns(self_ns, CLONE_NEWNET) != 0) die_errno(EXIT_NS, "network: back to the host's namespace");
  close(self_ns);
  close(child_ns);

  addr_add(cs, eth0, o->veth_addr, o->veth_plen, "eth0");
  link_up(cs, eth0, "eth0");
  {
    struct rtmsg rt;
    msg_init(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
    memset(&rt, 0, sizeof rt);
    rt.rtm_family = AF_INET;
    rt.rtm_table = RT_TABLE_MAIN;
    rt.rtm_protocol = RTPROT_BOOT;
    rt.rtm_scope = RT_SCOPE_UNIVERSE;
    rt.rtm_type = RTN_UNICAST;
    msg_put(&m, &rt, sizeof rt);
    attr_put(&m, RTA_GATEWAY, &o->veth_host_addr, 4);
    attr_put(&m, RTA_OIF, &eth0, 4);
    nl_do(cs, &m, "default route via", o->veth_host);
  }
  close(cs);
}
