/* memdom driver tests: TEST(name, timeout_seconds) */
TEST(memdom_commit_rejects, 10)
TEST(memdom_tracking_exact, 20)
TEST(memdom_suspend_real, 10)
TEST(memdom_activation_exact, 20)
TEST(memdom_patterns, 20)
TEST(memdom_rate_limit, 10)
TEST(memdom_dies_with_daemon, 10)
TEST(memdom_pause_measure, 40)
/* tandem probe (memdom) */
TEST(probe_cycles, 20)
TEST(probe_refused_while_protected, 30)
TEST(probe_stops_between_cycles, 30)
TEST(probe_link_predicts, 60)
