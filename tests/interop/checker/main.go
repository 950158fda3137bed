// Command checker verifies Audit Trail's proofs and checkpoints with the reference implementations:
// golang.org/x/mod/sumdb/note for signed notes, github.com/transparency-dev/merkle for RFC 6962/9162 proofs and
// filippo.io/torchwood for witness cosignatures (c2sp.org/tlog-cosignature). It reads one JSON document on stdin
// and prints "ok", or the failure and exits 1.
//
//	checker inclusion   < {"key", "checkpoint", "leaf_data", "leaf_index", "tree_size", "inclusion_proof"}
//	checker consistency < {"key", "old", "new", "proof"}
//	checker cosigned    < {"key", "witnesses", "min", "checkpoint"}
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"filippo.io/torchwood"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

type checkpoint struct {
	origin string
	size   uint64
	root   []byte
}

func open(key, msg string) (checkpoint, error) {
	v, err := note.NewVerifier(key)
	if err != nil {
		return checkpoint{}, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open([]byte(msg), note.VerifierList(v))
	if err != nil {
		return checkpoint{}, fmt.Errorf("note: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return checkpoint{}, fmt.Errorf("checkpoint body has %d lines", len(lines))
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint size: %w", err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint root: %w", err)
	}
	return checkpoint{origin: lines[0], size: size, root: root}, nil
}

func hashes(encoded []string) ([][]byte, error) {
	out := make([][]byte, 0, len(encoded))
	for _, e := range encoded {
		h, err := base64.StdEncoding.DecodeString(e)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func inclusion() error {
	var doc struct {
		Key            string   `json:"key"`
		Checkpoint     string   `json:"checkpoint"`
		LeafData       string   `json:"leaf_data"`
		LeafIndex      uint64   `json:"leaf_index"`
		TreeSize       uint64   `json:"tree_size"`
		InclusionProof []string `json:"inclusion_proof"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&doc); err != nil {
		return err
	}
	cp, err := open(doc.Key, doc.Checkpoint)
	if err != nil {
		return err
	}
	if cp.size != doc.TreeSize {
		return fmt.Errorf("tree size %d, checkpoint %d", doc.TreeSize, cp.size)
	}
	data, err := base64.StdEncoding.DecodeString(doc.LeafData)
	if err != nil {
		return err
	}
	path, err := hashes(doc.InclusionProof)
	if err != nil {
		return err
	}
	h := rfc6962.DefaultHasher
	return proof.VerifyInclusion(h, doc.LeafIndex, doc.TreeSize, h.HashLeaf(data), path, cp.root)
}

func consistency() error {
	var doc struct {
		Key   string   `json:"key"`
		Old   string   `json:"old"`
		New   string   `json:"new"`
		Proof []string `json:"proof"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&doc); err != nil {
		return err
	}
	older, err := open(doc.Key, doc.Old)
	if err != nil {
		return err
	}
	newer, err := open(doc.Key, doc.New)
	if err != nil {
		return err
	}
	path, err := hashes(doc.Proof)
	if err != nil {
		return err
	}
	return proof.VerifyConsistency(rfc6962.DefaultHasher, older.size, newer.size, path, older.root, newer.root)
}

// cosigned requires the log's signature and at least min valid cosignatures by the pinned witnesses.
func cosigned() error {
	var doc struct {
		Key        string   `json:"key"`
		Witnesses  []string `json:"witnesses"`
		Min        int      `json:"min"`
		Checkpoint string   `json:"checkpoint"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&doc); err != nil {
		return err
	}
	logKey, err := note.NewVerifier(doc.Key)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	verifiers := []note.Verifier{logKey}
	witnesses := map[string]bool{}
	for _, vkey := range doc.Witnesses {
		w, err := torchwood.NewCosignatureVerifier(vkey)
		if err != nil {
			return fmt.Errorf("witness key: %w", err)
		}
		verifiers = append(verifiers, w)
		witnesses[w.Name()] = true
	}
	n, err := note.Open([]byte(doc.Checkpoint), note.VerifierList(verifiers...))
	if err != nil {
		return fmt.Errorf("note: %w", err)
	}
	logSigned, count := false, 0
	for _, sig := range n.Sigs {
		if sig.Name == logKey.Name() && sig.Hash == logKey.KeyHash() {
			logSigned = true
		} else if witnesses[sig.Name] {
			count++
		}
	}
	if !logSigned {
		return fmt.Errorf("not signed by the log key")
	}
	if count < doc.Min {
		return fmt.Errorf("%d cosignatures by pinned witnesses, %d required", count, doc.Min)
	}
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: checker inclusion|consistency|cosigned < document.json")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "inclusion":
		err = inclusion()
	case "consistency":
		err = consistency()
	case "cosigned":
		err = cosigned()
	default:
		err = fmt.Errorf("unknown check %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
}
