#include "../cli/cmd.h"
int cmd_backup(int argc, char **argv) { (void)argc; (void)argv; return 1; }
