package agent

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/riverqueue/river"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/netguard"
	"github.com/kern-go/kern/run"
)

// Webhooks follow Standard Webhooks (https://www.standardwebhooks.com):
//
//	webhook-id:        msg_<run id>, the same on every attempt: receivers dedupe on it
//	webhook-timestamp: the attempt's time, Unix seconds
//	webhook-signature: v1,<base64 of HMAC-SHA256(key, id + "." + timestamp + "." + body)>
//
// The key of a tenant's run is the tenant's own secret
// (db.TenantDB.RotateWebhookSecret) when it has one, else, as for the
// operator's runs, WorkerConfig.WebhookSecret: a "whsec_" secret is base64
// after the prefix, as the spec's libraries expect; any other string is
// used as its bytes. Falling back to the operator's secret keeps tenants
// that never rotated one working; the body names the tenant (tenant_id, in
// the signed bytes), so a receiver shared by tenants tells them apart.

// webhookTimeout bounds one delivery attempt (connect, send, answer).
const webhookTimeout = 10 * time.Second

// errNoWebhookSecret fails the deliveries of a worker without a secret:
// sending them unsigned would let anyone forge them.
var errNoWebhookSecret = errors.New("no WebhookSecret configured")

// webhookKey is the HMAC key of a WebhookSecret.
func webhookKey(secret string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		key, err := base64.StdEncoding.DecodeString(rest)
		if err != nil || len(key) == 0 {
			return nil, fmt.Errorf("kern: %w: WebhookSecret starts with whsec_ but the rest is not base64", run.ErrInvalidArgument)
		}
		return key, nil
	}
	return []byte(secret), nil
}

// webhookID is a delivery's webhook-id: stable per run.
func webhookID(runID string) string { return "msg_" + runID }

// webhookBody is the run in the API's JSON (db.MarshalRun) with the run's
// tenant first, "tenant_id" ("" for the operator's runs): signed with the
// body, it says whose run this is, so a delivery of one tenant's cannot
// pass for another's at a receiver that checks it.
func webhookBody(out *run.Output) ([]byte, error) {
	runJSON, err := db.MarshalRun(out)
	if err != nil {
		return nil, err
	}
	tenant, err := json.Marshal(out.TenantID)
	if err != nil {
		return nil, err
	}
	body := make([]byte, 0, len(runJSON)+len(tenant)+14)
	body = append(body, `{"tenant_id":`...)
	body = append(body, tenant...)
	body = append(body, ',')
	return append(body, runJSON[1:]...), nil // runJSON is an object: it starts with '{'
}

// signWebhook is the webhook-signature header of body.
func signWebhook(key []byte, id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// webhookWorker POSTs one terminal run to its webhook and records the
// attempt on the run.
type webhookWorker struct {
	river.WorkerDefaults[engine.WebhookJobArgs]
	w *Worker
}

func (ww *webhookWorker) Timeout(*river.Job[engine.WebhookJobArgs]) time.Duration {
	return ww.attemptTimeout() + 30*time.Second // the POST, and the reads and the record around it
}

func (ww *webhookWorker) attemptTimeout() time.Duration {
	if t := ww.w.cfg.webhookTimeout; t > 0 {
		return t
	}
	return webhookTimeout
}

// NextRetry is River's retry policy (attempt⁴ seconds, jittered: ten
// attempts span about four and a half hours) unless a test shortens it.
func (ww *webhookWorker) NextRetry(*river.Job[engine.WebhookJobArgs]) time.Time {
	if b := ww.w.cfg.webhookBackoff; b > 0 {
		return time.Now().Add(b)
	}
	return time.Time{}
}

func (ww *webhookWorker) Work(ctx context.Context, job *river.Job[engine.WebhookJobArgs]) error {
	w := ww.w
	url, err := w.store.WebhookURL(ctx, job.Args.RunID)
	if err != nil || url == "" {
		return err // nil: the run is gone (Retention), or has no webhook
	}
	out, err := w.store.ReadRun(ctx, job.Args.RunID)
	if errors.Is(err, run.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	key := w.cfg.webhookKey
	if secret, err := w.store.WebhookSecret(ctx, out.TenantID); err != nil {
		return err
	} else if secret != "" {
		if key, err = webhookKey(secret); err != nil {
			return err
		}
	}
	sendErr := errNoWebhookSecret
	if key != nil {
		sendErr = ww.send(ctx, url, out, key)
	}
	status, lastError := "delivered", ""
	if sendErr != nil {
		status, lastError = "pending", sendErr.Error()
		if job.Attempt >= job.MaxAttempts {
			status = "failed"
		}
		if errors.Is(sendErr, netguard.ErrNotPublic) {
			// Refused by the guard: no retry would be allowed either
			// (a name that rebinds back can rebind again).
			lastError += "; a tenant's webhook may reach only public addresses (WorkerConfig.AllowPrivateWebhooks)"
			status, sendErr = "failed", river.JobCancel(sendErr)
		}
	}
	recordCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), webhookTimeout)
	defer cancel()
	if err := w.store.RecordWebhook(recordCtx, job.Args.RunID, status, job.Attempt, lastError); err != nil {
		// Not recorded: try again (a delivered webhook may then be
		// delivered twice; receivers dedupe on webhook-id).
		return errors.Join(sendErr, err)
	}
	return sendErr
}

// send makes one delivery attempt: a 2xx answer is success.
func (ww *webhookWorker) send(ctx context.Context, url string, out *run.Output, key []byte) error {
	body, err := webhookBody(out)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, ww.attemptTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	id, ts := webhookID(out.RunID), time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kern-webhook")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signWebhook(key, id, ts, body))
	client := ww.w.hooks.http
	if out.TenantID != "" && !ww.w.cfg.AllowPrivateWebhooks {
		client = ww.w.hooks.guarded
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg := fmt.Sprintf("HTTP %d", resp.StatusCode)
		if text := strings.TrimSpace(strings.ToValidUTF8(string(answer), "")); text != "" && utf8.ValidString(text) {
			msg += ": " + text
		}
		return errors.New(msg)
	}
	return nil
}
