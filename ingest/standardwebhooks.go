package ingest

// standardWebhooks is being written (issue 4).
type standardWebhooks struct{ unimplemented }

func (standardWebhooks) Name() string { return "standardwebhooks" }
