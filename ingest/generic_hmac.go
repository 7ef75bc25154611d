package ingest

// genericHMAC is being written (issue 4).
type genericHMAC struct{ unimplemented }

func (genericHMAC) Name() string { return "hmac" }
