/* Sequence-numbered request/response protocol of the lab's guest service.
 *
 * Text lines over one TCP connection, each at most SEQ_LINE_MAX bytes:
 *
 *   client: HELLO <sid>\n
 *   server: WELCOME <sid> <count> <boot>\n
 *   client: REQ <sid> <n>\n           n = responses the client has seen + 1
 *   server: RSP <sid> <n> <count> <boot> <total>\n
 *
 * The server keeps, per session id, how many requests it has answered
 * (count); boot is a random id chosen when the server starts; total counts
 * every request it answered since it started.  The client expects count == n.
 *   count <  n  rollback: the server forgot answers the client received
 *   count >  n  gap:      the server answered requests whose answers were lost
 *   an answer for an n already seen: repeat
 *   boot changes: the server restarted (its state is gone)
 *   the connection drops: reset (the client reconnects with HELLO and the
 *   WELCOME count is compared the same way).
 */
#ifndef SEQPROTO_H
#define SEQPROTO_H

#define SEQ_LINE_MAX 160
#define SEQ_DEFAULT_PORT 7000

#endif
