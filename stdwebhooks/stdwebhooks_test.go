package stdwebhooks

import (
	"strings"
	"testing"
)

// The specification's own example: the secret, id, timestamp and body
// published with Standard Webhooks sign to the published signature.
func TestSpecificationExample(t *testing.T) {
	key, err := DecodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Header([][]byte{key}, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
}

// Each key gives its own v1 entry, in order.
func TestHeaderOneEntryPerKey(t *testing.T) {
	h := Header([][]byte{[]byte("a"), []byte("b")}, "id", "1", []byte("{}"))
	parts := strings.Split(h, " ")
	if len(parts) != 2 || parts[0] == parts[1] || !strings.HasPrefix(parts[1], "v1,") {
		t.Fatalf("header %q", h)
	}
}

// A secret that is not whsec_ plus base64 is refused, and the error does
// not repeat it.
func TestDecodeSecretRefusals(t *testing.T) {
	for _, s := range []string{"", "plain-secret", "whsec_", "whsec_not base64!", "WHSEC_c2VjcmV0"} {
		_, err := DecodeSecret(s)
		if err == nil {
			t.Errorf("%q accepted", s)
			continue
		}
		if secret := strings.TrimPrefix(s, SecretPrefix); secret != "" && strings.Contains(err.Error(), secret) {
			t.Errorf("the error for %q repeats it: %v", s, err)
		}
	}
}
