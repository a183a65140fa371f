package stack_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoalproject/shoal/swarm/stack"
)

// Load never panics, whatever the input: it returns a stack or an error.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "tutorials", "*.yml"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(fullFile))
	f.Add([]byte("services:\n  web:\n    image: ${X:?}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("services: {web: {image: x, ports: ['1-2:3-4/udp'], volumes: ['a:b:c:d']}}"))
	f.Add([]byte("networks:\n  n:\n    external: {name: x}\nservices:\n  s:\n    image: i\n    networks: [n]\n"))
	dir := f.TempDir()
	env := map[string]string{"WEBAPP_REPLICAS": "2", "NGINX_REPLICAS": "1", "X": "y"}
	f.Fuzz(func(t *testing.T, content []byte) {
		st, err := stack.Load(context.Background(), "fz", []stack.File{{Name: "fuzz.yml", Content: content}},
			stack.Options{Env: env, WorkingDir: dir, MapImage: testImage})
		if err == nil {
			if st == nil {
				t.Fatal("no stack and no error")
			}
			if err := st.Validate(); err != nil {
				t.Fatalf("a loaded stack does not validate: %v", err)
			}
		}
	})
}
