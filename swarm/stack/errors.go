package stack

import (
	"errors"
	"strings"
)

// Errors of loading and deploying stacks. Load's errors wrap one of them
// (or api.ErrInvalidSpec for a spec the API would refuse); the typed
// *UnsupportedError and *ConflictError carry every problem at once, so a
// user fixes a file in one go.
var (
	// ErrInvalidFile is wrapped by the errors of a file that is not a
	// Compose file: YAML syntax, the Compose schema, wrong types. The
	// message is compose-go's, with the file and the position or key.
	ErrInvalidFile = errors.New("stack: invalid compose file")
	// ErrUnsupported is wrapped by *UnsupportedError: the files use keys
	// or values that Shoal cannot honour.
	ErrUnsupported = errors.New("stack: not supported by Shoal")
	// ErrMissingVariable is returned for a ${VAR:?message} or ${VAR?message}
	// whose variable is not set, and for a ${VAR} left unset where the file
	// needs a value (a number, a boolean).
	ErrMissingVariable = errors.New("stack: variable not set")
	// ErrInvalidName is returned for a stack name that cannot prefix the
	// names of services, networks, secrets and configs.
	ErrInvalidName = errors.New("stack: invalid stack name")
	// ErrNotFound is returned when nothing has the stack's label (Remove,
	// Services, Tasks), and by Deploy for external networks, secrets or
	// configs that do not exist.
	ErrNotFound = errors.New("stack: not found")
	// ErrConflict is wrapped by *ConflictError: Deploy found objects it
	// cannot create or change as the stack asks.
	ErrConflict = errors.New("stack: conflict")
)

// Problem is one thing wrong, at a path in the Compose files such as
// "services.web.deploy.placement" or in the cluster ("network demo_net").
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

func joinProblems(ps []Problem) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// UnsupportedError lists every key and value of the files that Shoal
// cannot honour, such as "services.web.privileged: not supported by
// Shoal". Nothing is deployed from such files.
type UnsupportedError struct {
	Problems []Problem `json:"problems"`
}

func (e *UnsupportedError) Error() string { return "stack: " + joinProblems(e.Problems) }

func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// ConflictError lists what stops a deploy before it changes anything: an
// object of the stack's name that belongs to something else, a network,
// config or secret that differs from the file and cannot change in place,
// a missing external object.
type ConflictError struct {
	Stack    string    `json:"stack"`
	Problems []Problem `json:"problems"`
	// Missing is set when an external object does not exist; the error
	// then also wraps ErrNotFound.
	Missing bool `json:"missing,omitempty"`
}

func (e *ConflictError) Error() string {
	return "stack: cannot deploy " + e.Stack + ": " + joinProblems(e.Problems)
}

func (e *ConflictError) Unwrap() []error {
	if e.Missing {
		return []error{ErrConflict, ErrNotFound}
	}
	return []error{ErrConflict}
}

// Warning is a key that Shoal ignores, or a change it made, as Docker's
// `stack deploy` prints them ("Ignoring unsupported options: build").
type Warning struct {
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

func (w Warning) String() string { return Problem(w).String() }
