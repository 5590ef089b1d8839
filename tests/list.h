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
TEST(channel_wrong_key, 10)
TEST(channel_wrong_peer, 10)
TEST(channel_bad_handshakes, 20)
TEST(channel_replayed_session, 10)
TEST(channel_frame_attacks_auth, 10)
TEST(channel_frame_attacks_encrypt, 10)
TEST(key_file_checks, 5)
