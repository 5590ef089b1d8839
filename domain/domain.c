/*
 * domain.c - pick the driver for a configuration.
 */
#include "domain.h"

const struct domain_ops *domain_ops_for(const struct tandem_config *cfg)
{
	return cfg->domain == DOMAIN_MEMDOM ? &memdom_ops : &xen_ops;
}
