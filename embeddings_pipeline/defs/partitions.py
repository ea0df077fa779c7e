"""One partition per tenant. Tenants appear as data arrives, so the partitions are dynamic."""

import dagster as dg

tenant_partitions = dg.DynamicPartitionsDefinition(name="tenant")
