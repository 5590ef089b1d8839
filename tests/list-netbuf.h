/* output buffering (buffering/): TEST(name, timeout_seconds).  The plug
 * tests skip on kernels without sch_plug; netbuf_vm61_plug runs them under
 * Debian's 6.1 kernel (QEMU TCG, slower: hence their 60 s). */
TEST(netbuf_queue_ipv4_epochs, 20)
TEST(netbuf_queue_ipv6_held, 20)
TEST(netbuf_queue_arp_held, 20)
TEST(netbuf_queue_many_epochs, 20)
TEST(netbuf_queue_overflow, 20)
TEST(netbuf_queue_sigkill, 20)
TEST(netbuf_queue_missing_vif, 10)
TEST(netbuf_plug_ipv4_epochs, 60)
TEST(netbuf_plug_ipv6_held, 60)
TEST(netbuf_plug_arp_held, 60)
TEST(netbuf_plug_one_closed_epoch, 60)
TEST(netbuf_plug_overflow, 60)
TEST(netbuf_plug_sigkill, 60)
TEST(netbuf_plug_missing_vif, 60)
TEST(netbuf_vm61_plug, 400)
