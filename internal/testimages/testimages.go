// Package testimages builds container images for tests from a small static
// Go program (see app/), as image tarballs that containerd imports: no
// registry and no network needed.
package testimages

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// AppRef is the reference of the test image Build makes.
const AppRef = "shoal.test/app:1"

// SeedFile is a file the image holds, with SeedContent, for tests of
// volumes filled from the image.
const (
	SeedFile    = "/srv/seed.txt"
	SeedContent = "from the image\n"
)

// WebRef is the reference of the image BuildWeb makes: the same program,
// serving HTTP on port 80 by default (a web service's image).
const WebRef = "shoal.test/web:1"

// Web2Ref is a second version of WebRef (BuildWeb2), for updates and
// rollbacks: the same program, whose answers end with "v2" (its image sets
// WEB_VERSION=v2).
const Web2Ref = "shoal.test/web:2"

// Build compiles the test program and writes the image as a tarball (the
// `docker save` layout, which containerd imports) into dir. It returns the
// tarball's path.
func Build(ctx context.Context, dir string) (string, error) {
	return build(ctx, dir, AppRef, []string{"sleep"}, "app.tar")
}

// BuildWeb2 writes the Web2Ref image's tarball into dir (web2.tar), as
// BuildWeb does.
func BuildWeb2(ctx context.Context, dir string) (string, error) {
	return build(ctx, dir, Web2Ref, []string{"http", ":80"}, "web2.tar", "WEB_VERSION=v2")
}

// BuildWeb writes the WebRef image's tarball into dir (web.tar), as Build
// does; its default command is "http :80".
func BuildWeb(ctx context.Context, dir string) (string, error) {
	return build(ctx, dir, WebRef, []string{"http", ":80"}, "web.tar")
}

func build(ctx context.Context, dir, ref string, cmd []string, file string, env ...string) (string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("testimages: cannot find the program's source")
	}
	bin := filepath.Join(dir, "app")
	gb := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./app")
	gb.Dir = filepath.Dir(self)
	gb.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gb.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testimages: go build: %v\n%s", err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	if err := tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(binary)), Typeflag: tar.TypeReg}); err != nil {
		return "", err
	}
	tw.Write(binary)
	// An empty /tmp and /etc keep runtimes and resolvers happy.
	for _, d := range []string{"tmp/", "etc/"} {
		tw.WriteHeader(&tar.Header{Name: d, Mode: 0o1777, Typeflag: tar.TypeDir})
	}
	// Content for volumes to be filled from (SeedFile).
	tw.WriteHeader(&tar.Header{Name: "srv/", Mode: 0o755, Typeflag: tar.TypeDir})
	tw.WriteHeader(&tar.Header{Name: "srv/seed.txt", Mode: 0o644, Size: int64(len(SeedContent)), Typeflag: tar.TypeReg})
	io.WriteString(tw, SeedContent)
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar.Bytes())), nil
	})
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config = v1.Config{Entrypoint: []string{"/app"}, Cmd: cmd, Env: append([]string{"PATH=/"}, env...)}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return "", err
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, file)
	if err := tarball.WriteToFile(out, r, img); err != nil {
		return "", err
	}
	os.Remove(bin)
	return out, nil
}
