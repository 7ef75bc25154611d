package opensearch

import (
	"encoding/json"

	"github.com/productstream/productstream/sink"
)

// templatePriority ranks this sink's index template above catch-all
// templates; adding the alias's length keeps two sinks whose names are
// prefixes of each other ("shop" and "shop-gx": the pattern shop-g* also
// matches shop-gx-g1) from clashing, the longer, more specific name winning.
const templatePriority = 1000

// template is the index template every generation <index>-g<N> is created
// from: one shard, no replica (raise index.number_of_replicas later on the
// template and the live index with PUT _settings: it is a dynamic setting),
// the configured refresh interval, if any,
// and an explicit mapping with dynamic: false, so fields not listed here
// are kept in _source but never indexed.
func (s *Sink) template() map[string]any {
	settings := map[string]any{
		"index.number_of_shards":   1,
		"index.number_of_replicas": 0,
	}
	if s.refresh != 0 {
		settings["index.refresh_interval"] = refreshSetting(s.refresh)
	}
	keyword := map[string]any{"type": "keyword"}
	price := map[string]any{"type": "scaled_float", "scaling_factor": 100}
	stored := map[string]any{"type": "keyword", "index": false, "doc_values": false}
	return map[string]any{
		"index_patterns": []string{s.alias + "-g*"},
		"priority":       templatePriority + len(s.alias),
		"template": map[string]any{
			"settings": settings,
			"mappings": map[string]any{
				"dynamic": false,
				"properties": map[string]any{
					"key":        keyword,
					"namespace":  keyword,
					"product_id": keyword,
					"version":    map[string]any{"type": "long"},
					"deleted":    map[string]any{"type": "boolean"},
					"updated_at": map[string]any{"type": "date", "format": "epoch_millis"},
					"title": map[string]any{"type": "text",
						"fields": map[string]any{"keyword": map[string]any{"type": "keyword", "ignore_above": 256}}},
					"description":  map[string]any{"type": "text"},
					"brand":        keyword,
					"currency":     keyword,
					"availability": keyword,
					"sku":          keyword,
					"gtin":         keyword,
					"price":        price,
					"sale_price":   price,
					"url":          stored,
					"image_url":    stored,
					// The record's value as it is, for readers and Held:
					// kept in _source, never parsed.
					"state": map[string]any{"type": "object", "enabled": false},
				},
			},
		},
		"_meta": map[string]any{"managed_by": "productstream", "alias": s.alias},
	}
}

// document is what is indexed for one record: the typed fields the mapping
// indexes, copied from the record and its Doc's "fields", and the Doc
// itself as state. A delete is the same without state or typed fields.
type document struct {
	Key       string `json:"key"`
	Namespace string `json:"namespace"`
	ProductID string `json:"product_id"`
	Version   int64  `json:"version"`
	Deleted   bool   `json:"deleted"`
	// UpdatedAt is the record's UpdatedAt in epoch milliseconds.
	UpdatedAt *int64 `json:"updated_at,omitempty"`

	Title        json.RawMessage `json:"title,omitempty"`
	Description  json.RawMessage `json:"description,omitempty"`
	Brand        json.RawMessage `json:"brand,omitempty"`
	Currency     json.RawMessage `json:"currency,omitempty"`
	Availability json.RawMessage `json:"availability,omitempty"`
	SKU          json.RawMessage `json:"sku,omitempty"`
	GTIN         json.RawMessage `json:"gtin,omitempty"`
	// Price and SalePrice are sent as the exact decimal strings of the Doc;
	// OpenSearch coerces them into the scaled_float.
	Price     json.RawMessage `json:"price,omitempty"`
	SalePrice json.RawMessage `json:"sale_price,omitempty"`
	URL       json.RawMessage `json:"url,omitempty"`
	ImageURL  json.RawMessage `json:"image_url,omitempty"`

	State json.RawMessage `json:"state,omitempty"`
}

// Document is the JSON document the sink indexes for rec (what a bare
// bulk write of the same data must send, for the load harness).
func Document(rec sink.Record) any { return newDocument(rec) }

// newDocument builds rec's document. rec.Doc must be valid JSON unless
// rec.Deleted.
func newDocument(rec sink.Record) document {
	d := document{Key: rec.Key, Namespace: rec.Namespace, ProductID: rec.ID, Version: rec.Version, Deleted: rec.Deleted}
	if !rec.UpdatedAt.IsZero() {
		ms := rec.UpdatedAt.UnixMilli()
		d.UpdatedAt = &ms
	}
	if rec.Deleted {
		return d
	}
	d.State = rec.Doc
	// A Doc that is not an object with an object "fields" (another topic
	// family's value) has no typed fields: it is kept as state alone.
	var v struct {
		Fields map[string]json.RawMessage `json:"fields"`
	}
	if json.Unmarshal(rec.Doc, &v) != nil {
		return d
	}
	for name, dst := range map[string]*json.RawMessage{
		"title": &d.Title, "description": &d.Description, "brand": &d.Brand, "currency": &d.Currency,
		"availability": &d.Availability, "sku": &d.SKU, "gtin": &d.GTIN, "price": &d.Price,
		"sale_price": &d.SalePrice, "url": &d.URL, "image_url": &d.ImageURL,
	} {
		if raw, ok := v.Fields[name]; ok && string(raw) != "null" {
			*dst = raw
		}
	}
	return d
}
