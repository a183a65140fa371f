package stack

import (
	"strings"

	"github.com/compose-spec/compose-go/v2/tree"
)

// The keys of the Compose specification that Shoal honours, as compose-go
// paths ("*" any key, "[]" any list item). Everything else in a file is
// reported (compose-go's allowlist check): keys that only docker compose
// uses become warnings (composeOnly), every other key an error. A key the
// specification gains later is refused until it is added here.
var supportedPaths = paths(
	// top level
	"services", "networks", "volumes", "secrets", "configs",

	"networks.*", "networks.*.name", "networks.*.driver", "networks.*.driver_opts", "networks.*.driver_opts.*",
	"networks.*.attachable", "networks.*.internal", "networks.*.external", "networks.*.labels", "networks.*.labels.*",
	"networks.*.ipam", "networks.*.ipam.driver", "networks.*.ipam.config",
	"networks.*.ipam.config.[].subnet", "networks.*.ipam.config.[].gateway", "networks.*.ipam.config.[].ip_range",
	"networks.*.ipam.config.[].aux_addresses", "networks.*.ipam.config.[].aux_addresses.*",

	"volumes.*", "volumes.*.name", "volumes.*.driver", "volumes.*.external",

	"secrets.*", "secrets.*.name", "secrets.*.file", "secrets.*.environment", "secrets.*.external",
	"secrets.*.labels", "secrets.*.labels.*",

	"configs.*", "configs.*.name", "configs.*.file", "configs.*.environment", "configs.*.content", "configs.*.external",
	"configs.*.labels", "configs.*.labels.*",

	// services
	"services.*",
	"services.*.image", "services.*.command", "services.*.entrypoint",
	"services.*.environment", "services.*.environment.*",
	"services.*.env_file", "services.*.env_file.[].path", "services.*.env_file.[].required", "services.*.env_file.[].format",
	"services.*.labels", "services.*.labels.*", "services.*.label_file",
	"services.*.user", "services.*.working_dir", "services.*.hostname", "services.*.read_only", "services.*.init",
	"services.*.stop_signal", "services.*.stop_grace_period", "services.*.platform", "services.*.tmpfs",
	"services.*.restart", // converted to deploy.restart_policy, as Docker does

	"services.*.healthcheck", "services.*.healthcheck.test", "services.*.healthcheck.interval",
	"services.*.healthcheck.timeout", "services.*.healthcheck.retries", "services.*.healthcheck.start_period",
	"services.*.healthcheck.disable",

	"services.*.logging", "services.*.logging.driver", "services.*.logging.options", "services.*.logging.options.*",

	"services.*.networks", "services.*.networks.*", "services.*.networks.*.aliases",

	"services.*.ports", "services.*.ports.[].target", "services.*.ports.[].published", "services.*.ports.[].protocol",
	"services.*.ports.[].mode", "services.*.ports.[].name",

	"services.*.secrets", "services.*.secrets.[].source", "services.*.secrets.[].target",
	"services.*.secrets.[].uid", "services.*.secrets.[].gid", "services.*.secrets.[].mode",
	"services.*.configs", "services.*.configs.[].source", "services.*.configs.[].target",
	"services.*.configs.[].uid", "services.*.configs.[].gid", "services.*.configs.[].mode",

	"services.*.volumes", "services.*.volumes.[].type", "services.*.volumes.[].source", "services.*.volumes.[].target",
	"services.*.volumes.[].read_only", "services.*.volumes.[].bind", "services.*.volumes.[].bind.create_host_path",
	"services.*.volumes.[].volume", "services.*.volumes.[].volume.nocopy",
	"services.*.volumes.[].tmpfs", "services.*.volumes.[].tmpfs.size",

	"services.*.deploy", "services.*.deploy.mode", "services.*.deploy.replicas", "services.*.deploy.endpoint_mode",
	"services.*.deploy.labels", "services.*.deploy.labels.*",
	"services.*.deploy.resources", "services.*.deploy.resources.limits", "services.*.deploy.resources.limits.cpus",
	"services.*.deploy.resources.limits.memory", "services.*.deploy.resources.limits.pids",
	"services.*.deploy.resources.reservations", "services.*.deploy.resources.reservations.cpus",
	"services.*.deploy.resources.reservations.memory", "services.*.deploy.resources.reservations.generic_resources",
	"services.*.deploy.resources.reservations.generic_resources.[].discrete_resource_spec",
	"services.*.deploy.resources.reservations.generic_resources.[].discrete_resource_spec.kind",
	"services.*.deploy.resources.reservations.generic_resources.[].discrete_resource_spec.value",
	"services.*.deploy.restart_policy", "services.*.deploy.restart_policy.condition", "services.*.deploy.restart_policy.delay",
	"services.*.deploy.restart_policy.max_attempts", "services.*.deploy.restart_policy.window",
	"services.*.deploy.update_config", "services.*.deploy.update_config.parallelism", "services.*.deploy.update_config.delay",
	"services.*.deploy.update_config.failure_action", "services.*.deploy.update_config.monitor",
	"services.*.deploy.update_config.max_failure_ratio", "services.*.deploy.update_config.order",
	"services.*.deploy.rollback_config", "services.*.deploy.rollback_config.parallelism", "services.*.deploy.rollback_config.delay",
	"services.*.deploy.rollback_config.failure_action", "services.*.deploy.rollback_config.monitor",
	"services.*.deploy.rollback_config.max_failure_ratio", "services.*.deploy.rollback_config.order",
	"services.*.deploy.placement", "services.*.deploy.placement.constraints", "services.*.deploy.placement.preferences",
	"services.*.deploy.placement.preferences.[].spread", "services.*.deploy.placement.max_replicas_per_node",
)

// composeOnly are the keys that only matter to docker compose (one host,
// containers it builds and starts itself). Docker's `stack deploy`
// ignores them with a warning, and so does Shoal.
var composeOnly = []struct {
	path    tree.Path
	message string
}{
	{"name", "ignored: the stack is named by the deploy command"},
	{"services.*.build", "ignored: stack deploy builds no image; the service runs its image:"},
	{"services.*.container_name", "ignored: setting the container name is not supported (tasks are named SERVICE.SLOT.ID)"},
	{"services.*.depends_on", "ignored: the services of a stack start together, in no order; each must wait for what it needs"},
	{"services.*.links", "ignored: services on a shared network reach each other by service name"},
	{"services.*.external_links", "ignored: services on a shared network reach each other by service name"},
	{"services.*.expose", "ignored: exposing ports is unnecessary - services on the same network can access each other's tasks on any port"},
	{"services.*.profiles", "ignored: every service of the file is deployed"},
	{"services.*.pull_policy", "ignored: nodes pull an image when they need it"},
	{"services.*.attach", "ignored: only docker compose attaches to containers"},
	{"services.*.develop", "ignored: only docker compose watches files"},
	{"services.*.volumes.[].consistency", "ignored: only Docker Desktop uses it"},
}

// hints say what to do instead, for keys that are refused.
var hints = []struct {
	path tree.Path
	hint string
}{
	{"services.*.extends", "Docker's stack deploy refuses it too; resolve it first with `docker compose config`"},
	{"include", "resolve it first with `docker compose config`, or pass the files one after the other"},
	{"services.*.network_mode", "tasks join the stack's overlay networks"},
	{"services.*.scale", "use deploy.replicas"},
	{"services.*.mem_limit", "use deploy.resources.limits.memory"},
	{"services.*.mem_reservation", "use deploy.resources.reservations.memory"},
	{"services.*.cpus", "use deploy.resources.limits.cpus"},
	{"services.*.pids_limit", "use deploy.resources.limits.pids"},
	{"services.*.deploy.resources.reservations.devices", "use deploy.resources.reservations.generic_resources"},
	{"services.*.gpus", "use deploy.resources.reservations.generic_resources"},
	{"services.*.ports.[].host_ip", "a published port answers on every address: of every node (mode ingress) or of the task's node (mode host)"},
	{"services.*.networks.*.ipv4_address", "task addresses are allocated by the cluster"},
	{"services.*.networks.*.ipv6_address", "task addresses are allocated by the cluster"},
	{"services.*.healthcheck.start_interval", "use start_period and interval"},
	{"services.*.volumes.[].bind.propagation", "bind mounts are private (rprivate)"},
}

func paths(ps ...string) []tree.Path {
	out := make([]tree.Path, len(ps))
	for i, p := range ps {
		out[i] = tree.Path(p)
	}
	return out
}

// showPath writes a compose-go path as a user reads it:
// "services.web.ports[].host_ip".
func showPath(p tree.Path) string { return strings.ReplaceAll(string(p), ".[]", "[]") }

// classify sorts the keys compose-go found outside supportedPaths into
// warnings (compose-only keys) and problems.
func classify(found []tree.Path) (warnings []Warning, problems []Problem) {
next:
	for _, p := range found {
		for _, c := range composeOnly {
			if p.Matches(c.path) {
				warnings = append(warnings, Warning{Path: showPath(p), Message: c.message})
				continue next
			}
		}
		msg := "not supported by Shoal"
		for _, h := range hints {
			if p.Matches(h.path) {
				msg += " (" + h.hint + ")"
				break
			}
		}
		problems = append(problems, Problem{Path: showPath(p), Message: msg})
	}
	return warnings, problems
}
