/* the observer invariant (tests/test_observer.c): a memdom guest with a
 * veth vif sends numbered UDP packets through the `queue` buffer; real
 * daemons, own network namespaces */
TEST(observer_protect_and_failover, 60)
TEST(observer_exit_after_release, 60)
TEST(observer_after_ship_before_ack, 60)
TEST(observer_mid_capture, 60)
