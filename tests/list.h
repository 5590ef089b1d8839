/*
 * list.h - every test, in the order they run: TEST(name, timeout_seconds).
 * The runner (tests/runner.c) includes this list twice.
 */
/* unit: configuration */
TEST(config_units_and_defaults, 5)
TEST(config_error_classes, 5)
TEST(config_load_errors, 5)
TEST(config_digest, 5)
TEST(config_print_round_trip, 5)
TEST(config_examples_parse, 5)
TEST(config_docs_match_schema, 5)
/* unit: wire records */
TEST(wire_round_trips, 5)
TEST(wire_stream_header, 5)
TEST(wire_validators_reject, 5)
TEST(wire_garbage, 10)
/* unit: authenticated channel */
TEST(channel_exchange_auth, 10)
TEST(channel_exchange_encrypt, 10)
TEST(channel_exchange_lz4, 10)
TEST(channel_exchange_lz4_encrypt, 10)
TEST(wire_lz4, 5)
TEST(channel_slow_frame, 20)
TEST(send_bounded, 20)
TEST(channel_wrong_key, 10)
TEST(channel_wrong_peer, 10)
TEST(channel_bad_handshakes, 20)
TEST(channel_replayed_session, 10)
TEST(channel_frame_attacks_auth, 10)
TEST(channel_frame_attacks_encrypt, 10)
TEST(key_file_checks, 5)
/* fuzz harnesses over their corpora */
TEST(fuzz_corpus_wire, 60)
TEST(fuzz_corpus_handshake, 60)
TEST(fuzz_corpus_config, 60)
#include "list-memdom.h"
/* integration: real daemons on loopback, memdom guest */
TEST(engine_protect_and_failover, 30)
TEST(engine_lz4_failover, 60)
TEST(engine_status_fields, 30)
TEST(engine_clean_stop, 30)
TEST(engine_suspend_fails, 30)
TEST(engine_guest_ends, 30)
TEST(engine_timeout_failover, 30)
TEST(engine_stretch, 30)
TEST(engine_wrong_peer, 30)
TEST(fault_before_capture, 30)
TEST(fault_mid_capture, 30)
TEST(fault_mid_ship, 30)
TEST(fault_after_ship_before_ack, 30)
TEST(fault_primary_exit_after_release, 30)
TEST(crash_report, 30)
TEST(fault_duplicate_frame, 30)
TEST(fault_drop_ack, 30)
TEST(engine_slow_backup, 60)
TEST(fault_backup_mid_commit, 30)
TEST(fault_backup_before_ack, 30)
TEST(engine_random_kill, 900)
#include "list-netbuf.h"
#include "list-heartbeat.h"
/* failure detection end to end: heartbeat paths, policies (own netns) */
TEST(failover_replication_cut_only, 60)
TEST(failover_all_paths_failover, 60)
TEST(failover_fence_ok, 60)
TEST(failover_fence_fails, 60)
TEST(failover_fence_hangs, 60)
TEST(failover_witness_unreachable, 60)
TEST(failover_manual_promote, 60)
TEST(failover_kill_primary, 60)
/* xen driver pieces that run without Xen */
TEST(xenstream_cuts_at_checkpoints, 10)
TEST(xenstream_rejects_garbage, 10)
TEST(xenstream_libxl_records, 10)
TEST(xen_guest_types, 5)
TEST(xen_driver_needs_xen, 10)
#include "list-observer.h"
