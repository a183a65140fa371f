package netmesh

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Encrypted overlay networks carry task traffic in WireGuard, routed (layer
// 3), the way flannel's wireguard backend does, instead of VXLAN inside
// WireGuard: the task's TCP segments reach the tunnel whole (TSO through the
// TUN device), so userspace WireGuard encrypts 64 KiB at a time instead of
// one VXLAN frame at a time. Each encrypted network has its own WireGuard
// device, routing table and policy rules, so networks with the same subnet
// stay apart.

const (
	// DefaultWireGuardPort is the base of encrypted networks' UDP ports.
	DefaultWireGuardPort = 51820
	// WireGuardOverhead is what WireGuard adds to each packet over an IPv4
	// underlay (outer IP, UDP, WireGuard header and tag).
	WireGuardOverhead = 60
	// DefaultKeyRotation is how often a node should replace its WireGuard
	// key (RotateKey); the managers drive the schedule.
	DefaultKeyRotation = 12 * time.Hour
)

// WireGuard backends, as reported by Overlay.WireGuardBackend.
const (
	WireGuardKernel    = "kernel"
	WireGuardUserspace = "userspace"
)

// ErrNoPeerKey is returned (wrapped) by SetEndpoints for an encrypted network
// when a node with endpoints on it has no known public key (SetPeerKeys):
// its endpoints stay unreachable until the key arrives.
var ErrNoPeerKey = errors.New("netmesh: no WireGuard public key for node")

// WireGuardKey is a Curve25519 key, private or public.
type WireGuardKey [32]byte

// GenerateWireGuardKey makes a new private key.
func GenerateWireGuardKey() (WireGuardKey, error) {
	var k WireGuardKey
	if _, err := rand.Read(k[:]); err != nil {
		return k, err
	}
	// Clamp, as every WireGuard implementation does.
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// ParseWireGuardKey reads a key in base64, as wg(8) prints it.
func ParseWireGuardKey(s string) (WireGuardKey, error) {
	var k WireGuardKey
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("netmesh: %q is not a WireGuard key: want 44 characters of base64 for 32 bytes", s)
	}
	copy(k[:], b)
	return k, nil
}

// PublicKey is the public key of a private key.
func (k WireGuardKey) PublicKey() WireGuardKey {
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil { // only for a wrong length, which the type rules out
		panic(err)
	}
	var pub WireGuardKey
	copy(pub[:], priv.PublicKey().Bytes())
	return pub
}

// IsZero reports whether the key is unset.
func (k WireGuardKey) IsZero() bool { return k == WireGuardKey{} }

// String is the key in base64.
func (k WireGuardKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MarshalText encodes the key in base64.
func (k WireGuardKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes a base64 key.
func (k *WireGuardKey) UnmarshalText(b []byte) error {
	v, err := ParseWireGuardKey(string(b))
	if err == nil {
		*k = v
	}
	return err
}

// wgPeer is a node on an encrypted network: its key, where it listens, and
// the task addresses it may send from and receive for.
type wgPeer struct {
	Key        WireGuardKey
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
}

func (p wgPeer) equal(q wgPeer) bool {
	if p.Key != q.Key || p.Endpoint != q.Endpoint || len(p.AllowedIPs) != len(q.AllowedIPs) {
		return false
	}
	for i := range p.AllowedIPs {
		if p.AllowedIPs[i] != q.AllowedIPs[i] {
			return false
		}
	}
	return true
}

// wgTunnel is one encrypted network's WireGuard device, kernel or userspace.
type wgTunnel interface {
	setPrivateKey(k WireGuardKey) error
	// update removes the peers with the given keys, then adds or changes
	// the others (their allowed IPs replaced).
	update(remove []WireGuardKey, set []wgPeer) error
	close() error
}

// inNS runs fn with the calling goroutine's thread in the node's namespace.
// wireguard-go opens its TUN device and sockets in the caller's namespace.
func (o *Overlay) inNS(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(o.ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: Go ends it with this goroutine instead
		// of reusing a thread in the wrong namespace.
		return errors.Join(ferr, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// probeWireGuard picks the backend: the kernel module where the kernel has
// it (its generic netlink family exists), userspace wireguard-go otherwise.
func (o *Overlay) probeWireGuard() string {
	switch o.WireGuard {
	case WireGuardKernel, WireGuardUserspace:
		return o.WireGuard
	}
	if _, err := o.h.GenlFamilyGet("wireguard"); err == nil {
		return WireGuardKernel
	}
	return WireGuardUserspace
}

func (o *Overlay) newTunnel(name string, mtu, port int, key WireGuardKey) (wgTunnel, error) {
	if o.wgBackend == WireGuardKernel {
		return o.newKernelTunnel(name, mtu, port, key)
	}
	return o.newUserspaceTunnel(name, mtu, port, key)
}

// userspaceTunnel is wireguard-go over a TUN device.
type userspaceTunnel struct {
	dev *device.Device
}

// fixedMTU answers MTU queries itself: wireguard-go asks the kernel by
// device name from whatever thread it runs on, which may be in another
// namespace, where the name means another device or none.
type fixedMTU struct {
	tun.Device
	mtu int
}

func (t fixedMTU) MTU() (int, error) { return t.mtu, nil }

// nsBind opens wireguard-go's UDP sockets in the node's namespace.
type nsBind struct {
	conn.Bind
	o *Overlay
}

func (b nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = b.o.inNS(func() error {
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	return fns, actual, err
}

func (o *Overlay) newUserspaceTunnel(name string, mtu, port int, key WireGuardKey) (wgTunnel, error) {
	log := o.logger().With("device", name)
	logger := &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) },
	}
	var t *userspaceTunnel
	err := o.inNS(func() error {
		td, err := tun.CreateTUN(name, mtu)
		if err != nil {
			return fmt.Errorf("TUN device %s: %w", name, err)
		}
		dev := device.NewDevice(fixedMTU{td, mtu}, nsBind{conn.NewStdNetBind(), o}, logger)
		if err := dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(key[:]), port)); err != nil {
			dev.Close()
			return err
		}
		if err := dev.Up(); err != nil {
			dev.Close()
			return fmt.Errorf("WireGuard on UDP port %d: %w", port, err)
		}
		t = &userspaceTunnel{dev: dev}
		return nil
	})
	return t, err
}

func (t *userspaceTunnel) setPrivateKey(k WireGuardKey) error {
	return t.dev.IpcSet("private_key=" + hex.EncodeToString(k[:]) + "\n")
}

func (t *userspaceTunnel) update(remove []WireGuardKey, set []wgPeer) error {
	var b strings.Builder
	for _, k := range remove {
		fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hex.EncodeToString(k[:]))
	}
	for _, p := range set {
		fmt.Fprintf(&b, "public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\n", hex.EncodeToString(p.Key[:]), p.Endpoint)
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	if b.Len() == 0 {
		return nil
	}
	return t.dev.IpcSet(b.String())
}

func (t *userspaceTunnel) close() error {
	t.dev.Close() // closes the TUN device, which removes the link
	return nil
}

// kernelTunnel is a WireGuard link of the kernel module, configured through
// wgctrl (generic netlink) in the node's namespace.
type kernelTunnel struct {
	name   string
	client *wgctrl.Client
	h      *netlink.Handle
}

func (o *Overlay) newKernelTunnel(name string, mtu, port int, key WireGuardKey) (wgTunnel, error) {
	link := &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
	if err := o.h.LinkAdd(link); err != nil {
		return nil, fmt.Errorf("WireGuard link %s: %w", name, err)
	}
	t := &kernelTunnel{name: name, h: o.h}
	err := o.inNS(func() (err error) {
		t.client, err = wgctrl.New()
		return err
	})
	if err == nil {
		pk := wgtypes.Key(key)
		err = t.client.ConfigureDevice(name, wgtypes.Config{PrivateKey: &pk, ListenPort: &port})
	}
	if err == nil {
		err = o.h.LinkSetUp(link)
	}
	if err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func (t *kernelTunnel) setPrivateKey(k WireGuardKey) error {
	pk := wgtypes.Key(k)
	return t.client.ConfigureDevice(t.name, wgtypes.Config{PrivateKey: &pk})
}

func (t *kernelTunnel) update(remove []WireGuardKey, set []wgPeer) error {
	var peers []wgtypes.PeerConfig
	for _, k := range remove {
		peers = append(peers, wgtypes.PeerConfig{PublicKey: wgtypes.Key(k), Remove: true})
	}
	for _, p := range set {
		pc := wgtypes.PeerConfig{PublicKey: wgtypes.Key(p.Key), ReplaceAllowedIPs: true,
			Endpoint: net.UDPAddrFromAddrPort(p.Endpoint)}
		for _, a := range p.AllowedIPs {
			pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())})
		}
		peers = append(peers, pc)
	}
	if len(peers) == 0 {
		return nil
	}
	return t.client.ConfigureDevice(t.name, wgtypes.Config{Peers: peers})
}

func (t *kernelTunnel) close() error {
	var errs []error
	if t.client != nil {
		errs = append(errs, t.client.Close())
	}
	if l, err := t.h.LinkByName(t.name); err == nil {
		errs = append(errs, t.h.LinkDel(l))
	}
	return errors.Join(errs...)
}

func (o *Overlay) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// probeESP reports whether the kernel can hold an IPsec ESP state: it adds
// one between loopback addresses and deletes it at once. Only where this
// works could ESP carry encrypted networks; a policy without a state would
// blackhole their traffic, so no policy is ever installed on a guess.
func (o *Overlay) probeESP() (bool, error) {
	key := make([]byte, 20) // AES-128-GCM key and salt
	if _, err := rand.Read(key); err != nil {
		return false, err
	}
	spi := int(0x53000000 | uint32(key[0])<<8 | uint32(key[1]))
	st := &netlink.XfrmState{
		Src: net.IPv4(127, 0, 0, 1), Dst: net.IPv4(127, 0, 0, 2),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Spi: spi,
		Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: key, ICVLen: 128},
	}
	if err := o.h.XfrmStateAdd(st); err != nil {
		return false, err
	}
	return true, o.h.XfrmStateDel(st)
}
